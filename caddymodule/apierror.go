package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// apiError is an error answered to an API client in OpenAI's shape:
// {"error":{"message","type","param","code"}}.
type apiError struct {
	Status  int
	Type    string
	Code    string
	Message string
	Param   string
}

func (e *apiError) Error() string { return e.Message }

// The errors answered to API clients (README, "Refusals").
var (
	errMissingKey = &apiError{http.StatusUnauthorized, "invalid_request_error", "missing_api_key",
		"You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' or 'x-api-key: YOUR_KEY'.", ""}
	errInvalidKey = &apiError{http.StatusUnauthorized, "invalid_request_error", "invalid_api_key",
		"Incorrect API key provided, or the key was revoked or has expired.", ""}
	errQuota = &apiError{http.StatusPaymentRequired, "insufficient_quota", "insufficient_quota",
		"Your balance cannot cover this request. Top up your account or lower max_tokens.", ""}
	errUnavailable = &apiError{http.StatusServiceUnavailable, "server_error", "service_unavailable",
		"The service is temporarily unable to check your key or balance. Please retry shortly.", ""}
	errTooLarge = &apiError{http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
		"The request body is larger than this endpoint accepts.", ""}
)

func errInvalidRequest(msg, param string) *apiError {
	return &apiError{http.StatusBadRequest, "invalid_request_error", "invalid_request_error", msg, param}
}

func errRateLimited(rl *billing.RateLimitError) *apiError {
	return &apiError{http.StatusTooManyRequests, "requests", "rate_limit_exceeded",
		fmt.Sprintf("Rate limit reached: %d %s per minute for this key. Try again in %s.", rl.Limit, rl.Kind, formatReset(rl.Reset)), ""}
}

func errModelNotFound(model string) *apiError {
	return &apiError{http.StatusNotFound, "invalid_request_error", "model_not_found",
		"The model '" + model + "' does not exist or you do not have access to it.", "model"}
}

func errModelNotAllowed(model string) *apiError {
	return &apiError{http.StatusForbidden, "invalid_request_error", "model_not_allowed",
		"The model '" + model + "' is not allowed for this API key on this endpoint.", "model"}
}

func (e *apiError) write(w http.ResponseWriter) {
	body := struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    string  `json:"code"`
		} `json:"error"`
	}{}
	body.Error.Message, body.Error.Type, body.Error.Code = e.Message, e.Type, e.Code
	if e.Param != "" {
		body.Error.Param = &e.Param
	}
	b, _ := json.Marshal(body)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Status)
	_, _ = w.Write(b)
}

// errEncodedBody refuses a compressed request body: the gateway reads the
// body it bills, so it must be the body the upstream reads.
var errEncodedBody = &apiError{http.StatusUnsupportedMediaType, "invalid_request_error", "unsupported_content_encoding",
	"Send the request body uncompressed (no Content-Encoding).", "Content-Encoding"}

// errClientClosed marks a request whose client went away before it could
// be admitted (it stopped sending its body, or hung up during the key
// check). The answer reaches nobody; the status is nginx's and Caddy's 499.
var errClientClosed = &apiError{499, "invalid_request_error", "client_closed_request",
	"The client closed the connection before the request was complete.", ""}

// errUnsupportedEndpoint refuses a path the gateway neither meters nor
// lets through.
func errUnsupportedEndpoint(method, path string) *apiError {
	return &apiError{http.StatusNotFound, "invalid_request_error", "unsupported_endpoint",
		"This gateway does not serve " + method + " " + path + ".", ""}
}

// Errors for an upstream that gave no response, by status.
var (
	errBadGateway = &apiError{http.StatusBadGateway, "server_error", "upstream_unreachable",
		"The model provider could not be reached. Please retry shortly.", ""}
	errNoUpstream = &apiError{http.StatusServiceUnavailable, "server_error", "upstream_unavailable",
		"No model provider is available right now. Please retry shortly.", ""}
	errUpstreamTimeout = &apiError{http.StatusGatewayTimeout, "server_error", "upstream_timeout",
		"The model provider did not answer in time. Please retry shortly.", ""}
)

// errUpstream is the answer for an upstream that gave no response.
func errUpstream(status int) *apiError {
	switch status {
	case http.StatusServiceUnavailable:
		return errNoUpstream
	case http.StatusGatewayTimeout:
		return errUpstreamTimeout
	}
	return errBadGateway
}
