package meter

import (
	"encoding/json"
	"errors"
)

// Request is what the gateway needs from a request body.
type Request struct {
	// Format is the API shape of the endpoint.
	Format Format
	// Model is the "model" string of the body.
	Model string
	// Stream is true when the body asks for an SSE stream ("stream": true).
	Stream bool
	// MaxOutputTokens is the largest of max_tokens, max_completion_tokens and
	// max_output_tokens; 0 if none is set.
	MaxOutputTokens int64
	// ClientWantsUsage is true when the client itself set
	// stream_options.include_usage to true (chat/completions).
	ClientWantsUsage bool
	// InjectedUsage is true when Body was rewritten to ask the upstream for
	// stream usage.
	InjectedUsage bool
	// Choices is how many completions the request can produce (n × best_of
	// for chat and completions), at least 1.
	Choices int64
	// MediaParts counts the image, audio and file input parts, which cost
	// tokens the body's length does not show.
	MediaParts int64
	// InputEstimate is a conservative estimate of the input tokens, used for
	// the hold: ceil(len(body)/2), at least 1.
	InputEstimate int64
	// Body is the body to send upstream: the original slice when unchanged.
	Body []byte
}

// Errors from ParseRequest.
var (
	// ErrInvalidJSON means the body is not valid JSON or not an object.
	ErrInvalidJSON = errors.New("request body is not a JSON object")
	// ErrMissingModel means "model" is absent, empty or not a string.
	ErrMissingModel = errors.New("request body has no \"model\" string")
)

// injectedOptions is inserted right after the opening brace of a body
// without stream_options.
const injectedOptions = `"stream_options":{"include_usage":true},`

// ParseRequest reads what the gateway needs from a request body.
//
// For FormatChat and FormatCompletions with "stream": true, when injectUsage
// is set and the client does not already ask for usage, it rewrites the body
// so that stream_options.include_usage is true, keeping the client's other
// stream_options fields and every other byte of the body. Other requests are
// never rewritten and Body is body itself. Embeddings never stream; Messages
// and Responses report stream usage by themselves.
//
// Keys are matched exactly after unescaping, and the last of duplicate keys
// wins, as in the upstreams' own parsers, so a body cannot show the gateway
// one model and the upstream another.
//
// Errors: ErrInvalidJSON when body is not a JSON object, ErrMissingModel
// when "model" is absent, empty or not a string.
func ParseRequest(f Format, body []byte, injectUsage bool) (*Request, error) {
	it, ok := members(body)
	if !ok || !json.Valid(body) {
		return nil, ErrInvalidJSON
	}
	r := &Request{Format: f, Body: body, Choices: 1, InputEstimate: max(1, (int64(len(body))+1)/2)}
	var model, streamOpts []byte
	optsStart := -1
	for {
		k, v, more := it.next()
		if !more {
			break
		}
		switch {
		case keyIs(k, "model"):
			model = v
		case keyIs(k, "stream"):
			r.Stream = string(v) == "true"
		case keyIs(k, "max_tokens"), keyIs(k, "max_completion_tokens"), keyIs(k, "max_output_tokens"):
			if n := parseCount(v); n.ok && n.v > r.MaxOutputTokens {
				r.MaxOutputTokens = n.v
			}
		case keyIs(k, "stream_options"):
			streamOpts = v
			optsStart = it.i - len(v)
		}
	}
	if len(model) < 2 || model[0] != '"' {
		return nil, ErrMissingModel
	}
	if r.Model = unquote(model[1 : len(model)-1]); r.Model == "" {
		return nil, ErrMissingModel
	}
	switch f {
	case FormatChat, FormatCompletions:
	case FormatEmbeddings:
		r.Stream = false
		return r, nil
	default:
		return r, nil
	}
	r.ClientWantsUsage = includeUsage(streamOpts)
	if !r.Stream || !injectUsage || r.ClientWantsUsage {
		return r, nil
	}
	r.InjectedUsage = true
	if optsStart < 0 {
		open := skipWS(body, 0) + 1
		out := make([]byte, 0, len(body)+len(injectedOptions))
		out = append(out, body[:open]...)
		out = append(out, injectedOptions...)
		r.Body = append(out, body[open:]...)
		return r, nil
	}
	patched := withIncludeUsage(streamOpts)
	out := make([]byte, 0, len(body)-len(streamOpts)+len(patched))
	out = append(out, body[:optsStart]...)
	out = append(out, patched...)
	r.Body = append(out, body[optsStart+len(streamOpts):]...)
	return r, nil
}

// includeUsage reports whether the stream_options value v has
// "include_usage": true (the last such key wins).
func includeUsage(v []byte) bool {
	it, ok := members(v)
	if !ok {
		return false
	}
	want := false
	for {
		k, val, more := it.next()
		if !more {
			return want
		}
		if keyIs(k, "include_usage") {
			want = string(val) == "true"
		}
	}
}

// withIncludeUsage returns the stream_options value v with include_usage
// set to true and its other members kept in order. A v that is not an
// object is replaced.
func withIncludeUsage(v []byte) []byte {
	out := []byte(`{"include_usage":true`)
	it, ok := members(v)
	if !ok {
		return append(out, '}')
	}
	for {
		k, val, more := it.next()
		if !more {
			break
		}
		if keyIs(k, "include_usage") {
			continue
		}
		out = append(out, ',', '"')
		out = append(out, k...)
		out = append(out, '"', ':')
		out = append(out, val...)
	}
	return append(out, '}')
}
