package caddymodule

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestSetBodyContentLength: the upstream request's Content-Length always
// reads as the body's length in decimal, whatever the client sent (the
// transport writes its own from ContentLength; the header must not say
// otherwise to a handler between), and the body reads back whole, again
// through GetBody.
func TestSetBodyContentLength(t *testing.T) {
	body := []byte(strings.Repeat("x", 200))
	for _, sent := range [][]string{nil, {"200"}, {"0200"}, {"+200"}, {"200", "200"}, {"150"}} {
		r, err := http.NewRequest("POST", "http://upstream/v1/chat/completions", strings.NewReader("ignored"))
		if err != nil {
			t.Fatal(err)
		}
		r.TransferEncoding = []string{"chunked"}
		if sent != nil {
			r.Header[hdrContentLength] = sent
		}
		var rb requestBody
		setBody(r, body, &rb)
		if got := r.Header[hdrContentLength]; len(got) != 1 || got[0] != "200" {
			t.Errorf("client sent %q: upstream Content-Length %q, want [200]", sent, got)
		}
		if r.ContentLength != 200 || r.TransferEncoding != nil {
			t.Errorf("client sent %q: ContentLength %d, TransferEncoding %q", sent, r.ContentLength, r.TransferEncoding)
		}
		for _, open := range []func() (io.ReadCloser, error){
			func() (io.ReadCloser, error) { return r.Body, nil }, r.GetBody,
		} {
			rc, err := open()
			if err != nil {
				t.Fatal(err)
			}
			if b, err := io.ReadAll(rc); err != nil || string(b) != string(body) {
				t.Errorf("client sent %q: body read back %d bytes, %v", sent, len(b), err)
			}
		}
	}
}

// TestPrepareUpstreamAcceptEncoding: the upstream is asked for an
// uncompressed body, whatever the client accepts.
func TestPrepareUpstreamAcceptEncoding(t *testing.T) {
	for _, sent := range [][]string{nil, {"identity"}, {"gzip"}, {"identity", "gzip"}, {"gzip, identity"}} {
		h := http.Header{}
		if sent != nil {
			h[hdrAcceptEncoding] = sent
		}
		r := &http.Request{Header: h}
		prepareUpstream(r, []string{"identity"})
		if got := r.Header[hdrAcceptEncoding]; len(got) != 1 || got[0] != "identity" {
			t.Errorf("client sent %q: upstream Accept-Encoding %q, want [identity]", sent, got)
		}
	}
}
