package caddymodule_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// httpsURL is the test config's TLS site: Caddy's internal CA issues its
// certificate, as for any site with "tls internal".
const httpsURL = "https://localhost:9443"

// httpsSite is appended to the test config: a production-shaped site on
// Caddy's https_port, with the account API (and the legacy billing paths
// chat clients call, with and without /v1) in front of the metered route.
func httpsSite() string {
	return `
https://localhost:9443 {
	tls internal
	@account path /v1/account /v1/account/* /v1/dashboard/billing/* /dashboard/billing/*
	handle @account {
		aitoken_account
	}
	handle /v1/* {
		aitoken {
			reserve_output_tokens 100
		}
		reverse_proxy ` + env.upstream.URL + `
	}
}
`
}

// httpsClient returns a client that trusts exactly Caddy's internal CA
// (fetched from the admin API) and speaks HTTP/2, once the site's
// certificate is in place.
func httpsClient(t *testing.T) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ca struct {
			Root string `json:"root_certificate"`
		}
		resp, err := http.Get(adminURL + "/pki/ca/local")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&ca)
			resp.Body.Close()
		}
		if err == nil && pool.AppendCertsFromPEM([]byte(ca.Root)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no root certificate from the admin API's /pki/ca/local: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "localhost"},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	// The certificate is issued in the background after a (re)load.
	for {
		resp, err := c.Get(httpsURL + "/v1/account")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("GET /v1/account without a key over TLS: %d", resp.StatusCode)
			}
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("TLS site not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A streamed chat through the TLS site over HTTP/2: the certificate comes
// from Caddy's internal CA, the first delta arrives while the upstream
// still holds the stream, and the account is debited exactly.
func TestHTTPSStreamOverHTTP2(t *testing.T) {
	gateway(t)
	c := httpsClient(t)
	u, k := newAccount(t, "1.00", "")

	req, _ := http.NewRequest("POST", httpsURL+"/v1/chat/completions",
		strings.NewReader(`{"model":"test-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+k.Key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Mock-Hold", "1")
	req.Header.Set("X-Mock-Deltas", "6")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", resp.Proto)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || resp.TLS.PeerCertificates[0].VerifyHostname("localhost") != nil {
		t.Fatal("no verified certificate for localhost")
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Fatal("no X-Request-Id")
	}

	// The mock holds the stream after its first delta: reading that delta
	// now proves nothing on the way (TLS, HTTP/2, the meter) buffered it.
	rest := readHeldStream(t, resp.Body)
	if strings.Contains(rest, `"choices":[]`) {
		t.Fatalf("the injected usage chunk reached the client: %s", rest)
	}

	const want = 12*1_000 + 6*2_000 // test-model: 1.00 input, 2.00 output per 1M
	r := waitUsage(t, u.ID, 1)[0]
	if !r.Stream || r.InputTokens != 12 || r.OutputTokens != 6 || r.Estimated || r.Outcome != "completed" ||
		r.RequestID != resp.Header.Get("X-Request-Id") {
		t.Fatalf("usage row: %+v", r)
	}
	if got := mustNanos(t, r.Cost); got != want {
		t.Fatalf("row cost %d, want %d", got, want)
	}
	if moved := 1_000_000_000 - mustNanos(t, getUser(t, u.ID).Balance); moved != want {
		t.Fatalf("balance moved %d, want %d", moved, want)
	}
}
