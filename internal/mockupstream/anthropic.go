package mockupstream

import (
	"net/http"
)

// AnthropicUsage is the usage object of the Anthropic Messages API.
// InputTokens excludes cache reads and writes.
type AnthropicUsage struct {
	InputTokens              int `json:"input_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
	OutputTokens             int `json:"output_tokens"`
}

type anthropicText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type anthropicMessage struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Role         string          `json:"role"`
	Model        string          `json:"model"`
	Content      []anthropicText `json:"content"`
	StopReason   *string         `json:"stop_reason"`
	StopSequence *string         `json:"stop_sequence"`
	Usage        AnthropicUsage  `json:"usage"`
}

// messages answers the Anthropic-format POST /v1/messages: JSON, or the SSE
// sequence message_start, content_block_start, ping, content_block_delta…,
// content_block_stop, message_delta (cumulative usage; X-Mock-Message-Deltas
// of them), message_stop; or, with X-Mock-Error-After, an error event in
// place of a content_block_delta and nothing after it.
func (s *Server) messages(w http.ResponseWriter, r *http.Request) {
	o, req, ok := begin(w, r, writeAnthropicError)
	if !ok {
		return
	}
	id := s.nextID("msg_mock_")
	u := AnthropicUsage{InputTokens: o.prompt, CacheCreationInputTokens: o.cacheWrite,
		CacheReadInputTokens: o.cached, OutputTokens: o.deltas + o.reasoning}

	if !req.Stream {
		writeJSON(w, http.StatusOK, anthropicMessage{
			ID: id, Type: "message", Role: "assistant", Model: req.Model,
			Content:    []anthropicText{{Type: "text", Text: content(o.deltas)}},
			StopReason: ptr("end_turn"),
			Usage:      u,
		})
		return
	}

	st := startStream(w, r)
	start := u
	start.OutputTokens = 1 // a placeholder, as Anthropic sends it
	if st.event("message_start", map[string]any{"type": "message_start", "message": anthropicMessage{
		ID: id, Type: "message", Role: "assistant", Model: req.Model,
		Content: []anthropicText{}, Usage: start,
	}}) != nil {
		return
	}
	if st.event("content_block_start", map[string]any{
		"type": "content_block_start", "index": 0, "content_block": anthropicText{Type: "text"},
	}) != nil {
		return
	}
	if st.event("ping", map[string]any{"type": "ping"}) != nil {
		return
	}
	streamErr := func() error {
		return st.event("error", map[string]any{"type": "error",
			"error": map[string]string{"type": "overloaded_error", "message": "Overloaded"}})
	}
	for i := range o.deltas {
		if !s.step(st, o, i, streamErr) {
			return
		}
		if st.event("content_block_delta", map[string]any{
			"type": "content_block_delta", "index": 0,
			"delta": map[string]string{"type": "text_delta", "text": words[i%len(words)]},
		}) != nil {
			return
		}
	}
	if !s.step(st, o, o.deltas, streamErr) {
		return
	}
	if st.event("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0}) != nil {
		return
	}
	// With X-Mock-Message-Deltas > 1, the earlier message_delta events carry
	// a growing cumulative count and repeat the input counts, so a reader
	// that adds instead of overwriting bills too much.
	n := o.messageDeltas
	for k := 1; k <= n; k++ {
		usage := map[string]int{"output_tokens": u.OutputTokens * k / n}
		delta := map[string]any{"stop_reason": nil, "stop_sequence": nil}
		if k == n {
			delta["stop_reason"] = "end_turn"
		}
		if n > 1 {
			usage["input_tokens"] = u.InputTokens
			usage["cache_creation_input_tokens"] = u.CacheCreationInputTokens
			usage["cache_read_input_tokens"] = u.CacheReadInputTokens
		}
		if st.event("message_delta", map[string]any{"type": "message_delta", "delta": delta, "usage": usage}) != nil {
			return
		}
	}
	_ = st.event("message_stop", map[string]any{"type": "message_stop"})
}

// writeAnthropicError writes {"type":"error","error":{"type","message"}}.
func writeAnthropicError(w http.ResponseWriter, status int, msg string) {
	typ := "api_error"
	switch {
	case status == http.StatusUnauthorized:
		typ = "authentication_error"
	case status == http.StatusForbidden:
		typ = "permission_error"
	case status == http.StatusNotFound:
		typ = "not_found_error"
	case status == http.StatusRequestEntityTooLarge:
		typ = "request_too_large"
	case status == http.StatusTooManyRequests:
		typ = "rate_limit_error"
	case status == 529:
		typ = "overloaded_error"
	case status >= 400 && status < 500:
		typ = "invalid_request_error"
	}
	writeJSON(w, status, map[string]any{"type": "error", "error": map[string]string{"type": typ, "message": msg}})
}
