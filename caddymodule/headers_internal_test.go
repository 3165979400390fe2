package caddymodule

import (
	"net/http"
	"testing"
)

// The header names the metered path indexes http.Header with must be
// canonical, or a lookup would miss what Header.Get finds.
func TestHeaderNamesCanonical(t *testing.T) {
	names := append([]string{hdrAuthorization, hdrAPIKey, hdrAnthropicBeta, hdrContentType, hdrContentEncoding,
		hdrContentLength, hdrAcceptEncoding, hdrRequestID}, clientOnlyHeaders[:]...)
	for _, n := range names {
		if c := http.CanonicalHeaderKey(n); c != n {
			t.Errorf("header name %q is not canonical (%q)", n, c)
		}
	}
	h := http.Header{}
	h.Set("x-api-key", "k")
	if header(h, hdrAPIKey) != h.Get("X-API-KEY") || header(h, hdrAuthorization) != "" {
		t.Errorf("header(%v) disagrees with Header.Get", h)
	}
}
