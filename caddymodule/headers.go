package caddymodule

import "net/http"

// Header names the metered path reads or writes on every request, in
// canonical form, so that it indexes http.Header directly: Header.Get,
// Set and Del canonicalize their argument on every call, which costs
// several hundred instructions each (callgrind, BenchmarkGatewayRequest).
const (
	hdrAuthorization   = "Authorization"
	hdrAPIKey          = "X-Api-Key"
	hdrAnthropicBeta   = "Anthropic-Beta"
	hdrContentType     = "Content-Type"
	hdrContentEncoding = "Content-Encoding"
	hdrContentLength   = "Content-Length"
	hdrAcceptEncoding  = "Accept-Encoding"
	hdrRequestID       = "X-Request-Id"
)

// clientOnlyHeaders are removed before a request goes upstream: the
// client's credentials, and the headers that would pick another
// organization or project of the operator's upstream account.
var clientOnlyHeaders = [...]string{hdrAuthorization, hdrAPIKey, "Cookie", "Proxy-Authorization",
	"Openai-Organization", "Openai-Project"}

// header is h.Get(key) for a canonical key.
func header(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}
