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
// content_block_stop, message_delta (cumulative usage), message_stop.
func (s *Server) messages(w http.ResponseWriter, r *http.Request) {
	o, req, ok := begin(w, r, writeAnthropicError)
	if !ok {
		return
	}
	id := s.nextID("msg_mock_")
	u := AnthropicUsage{InputTokens: o.prompt, CacheReadInputTokens: o.cached, OutputTokens: o.deltas}

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
	for i := range o.deltas {
		if s.pace(st, o, i) != nil {
			return
		}
		if st.event("content_block_delta", map[string]any{
			"type": "content_block_delta", "index": 0,
			"delta": map[string]string{"type": "text_delta", "text": words[i%len(words)]},
		}) != nil {
			return
		}
	}
	if s.pace(st, o, o.deltas) != nil {
		return
	}
	if st.event("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0}) != nil {
		return
	}
	if st.event("message_delta", map[string]any{
		"type":  "message_delta",
		"delta": map[string]any{"stop_reason": "end_turn", "stop_sequence": nil},
		"usage": map[string]int{"output_tokens": o.deltas},
	}) != nil {
		return
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
