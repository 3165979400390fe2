package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// This file prepares the request that goes upstream: what is removed or
// refused before it leaves, and how it outlives a client that went away.

// start returns r with a context that outlives the client's: when the
// client goes away, the upstream request goes on for at most timeout more,
// so its usage report can still be read and billed. release ends it.
func (d *detached) start(r *http.Request, timeout time.Duration) *http.Request {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(r.Context()))
	d.cancel, d.timeout = cancel, timeout
	d.stop = context.AfterFunc(r.Context(), d.clientGone)
	return r.WithContext(ctx)
}

// detached is the state of one upstream request's context (see start).
// It lives in the request's meteredWriter, so it costs no allocation of
// its own.
type detached struct {
	mu       sync.Mutex
	timer    *time.Timer
	released bool
	timeout  time.Duration
	cancel   context.CancelCauseFunc
	stop     func() bool
}

// clientGone starts the client_gone_timeout clock.
func (d *detached) clientGone() {
	d.mu.Lock()
	if !d.released {
		d.timer = time.AfterFunc(d.timeout, d.timedOut)
	}
	d.mu.Unlock()
}

func (d *detached) timedOut() { d.cancel(errClientGoneTimeout) }

// release ends the upstream request's context.
func (d *detached) release() {
	d.stop()
	d.mu.Lock()
	d.released = true
	if d.timer != nil {
		d.timer.Stop()
	}
	d.mu.Unlock()
	d.cancel(nil)
}

// cutAfterClientLeft reports whether ctx, an upstream context from
// detached.start, was ended by client_gone_timeout.
func cutAfterClientLeft(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errClientGoneTimeout)
}

// errClientGoneTimeout ends an upstream request still read after its
// client left, once client_gone_timeout has passed.
var errClientGoneTimeout = errors.New("client_gone_timeout passed after the client went away")

// upstreamStatus is the status for an upstream that gave no response:
// the one reverse_proxy chose (502, 503 or 504), else 502.
func upstreamStatus(err error) int {
	var he caddyhttp.HandlerError
	if errors.As(err, &he) && he.StatusCode >= 500 {
		return he.StatusCode
	}
	return http.StatusBadGateway
}

// allowedBetas are the anthropic-beta features a client may ask for: they
// change neither the price of a token nor reach anything the operator's
// account shares between customers. Any other (long context and longer
// cache lifetimes, priced higher; the files API, shared by every customer;
// server-run tools, billed per use) is refused.
var allowedBetas = [...]string{"interleaved-thinking-", "fine-grained-tool-streaming-", "token-efficient-tools-",
	"output-128k-", "prompt-caching-", "computer-use-", "context-management-", "tools-", "max-tokens-"}

// checkBetas refuses a request that asks for an anthropic-beta feature
// outside allowedBetas.
func checkBetas(h http.Header) *apiError {
	for _, v := range h[hdrAnthropicBeta] {
		for b := range strings.SplitSeq(v, ",") {
			b = strings.TrimSpace(b)
			if b == "" || betaName(b) && slices.ContainsFunc(allowedBetas[:], func(p string) bool { return strings.HasPrefix(b, p) }) {
				continue
			}
			return errInvalidRequest("The anthropic-beta feature '"+b+"' is not available through this gateway: "+
				"it is priced differently from plain tokens, or reaches data shared by every customer.", "anthropic-beta")
		}
	}
	return nil
}

// betaName reports whether b is spelled as a beta name is: lower-case
// letters, digits and dashes only, so no second name can hide in it.
func betaName(b string) bool {
	for _, c := range []byte(b) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// prepareUpstream removes the client's credentials, so they never reach a
// provider, and the headers that would pick another organization or
// project of the operator's upstream account; it asks for an uncompressed
// body the meter can read (the encode handler may still compress for the
// client). It also removes what could make the upstream read the request
// other than the meter did: Content-Encoding (the body sent is the bytes
// the meter read, in no coding), and Upgrade, whose 101 answer would hand
// the connection to the upstream past the meter. identity is the header
// value to use, a slice of one "identity" that nothing else shares (a
// later handler may edit it in place).
func prepareUpstream(r *http.Request, identity []string) {
	for _, h := range clientOnlyHeaders {
		delete(r.Header, h)
	}
	delete(r.Header, hdrContentEncoding)
	delete(r.Header, "Upgrade")
	// Set, not deleted: Go's transport would otherwise ask for gzip itself.
	if v := r.Header[hdrAcceptEncoding]; len(v) != 1 || v[0] != "identity" {
		r.Header[hdrAcceptEncoding] = identity
	}
}

// requestBody is a metered request's body as it goes upstream: the bytes
// the meter read.
type requestBody struct{ bytes.Reader }

// Close does nothing: the bytes are in memory.
func (*requestBody) Close() error { return nil }

// setBody replaces the consumed request body with body, read through rb.
func setBody(r *http.Request, body []byte, rb *requestBody) {
	rb.Reset(body)
	r.Body = rb
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.TransferEncoding = nil
	r.ContentLength = int64(len(body))
	var n [20]byte
	length := strconv.AppendInt(n[:0], r.ContentLength, 10)
	if v := r.Header[hdrContentLength]; len(v) != 1 || v[0] != string(length) {
		r.Header[hdrContentLength] = []string{string(length)}
	}
}
