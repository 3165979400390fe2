package mockupstream

import (
	"net/http"
)

// ResponsesUsage is the usage object of the OpenAI Responses API.
type ResponsesUsage struct {
	InputTokens        int `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int `json:"total_tokens"`
}

type responseContent struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
}

type responseItem struct {
	Type    string            `json:"type"`
	ID      string            `json:"id"`
	Status  string            `json:"status"`
	Role    string            `json:"role"`
	Content []responseContent `json:"content"`
}

type responseObject struct {
	ID        string          `json:"id"`
	Object    string          `json:"object"`
	CreatedAt int64           `json:"created_at"`
	Status    string          `json:"status"`
	Model     string          `json:"model"`
	Output    []responseItem  `json:"output"`
	Usage     *ResponsesUsage `json:"usage"`
}

// responses answers POST /v1/responses: JSON, or SSE events ending with
// response.completed (no [DONE]).
func (s *Server) responses(w http.ResponseWriter, r *http.Request) {
	o, req, ok := begin(w, r, writeOpenAIError)
	if !ok {
		return
	}
	id := s.nextID("resp_mock_")
	itemID := "msg_" + id
	var u ResponsesUsage
	u.InputTokens = o.prompt + o.cached
	u.InputTokensDetails.CachedTokens = o.cached
	u.OutputTokens = o.deltas + o.reasoning
	u.OutputTokensDetails.ReasoningTokens = o.reasoning
	u.TotalTokens = u.InputTokens + u.OutputTokens

	done := responseObject{
		ID: id, Object: "response", CreatedAt: Created, Status: "completed", Model: req.Model,
		Output: []responseItem{{
			Type: "message", ID: itemID, Status: "completed", Role: "assistant",
			Content: []responseContent{{Type: "output_text", Text: content(o.deltas), Annotations: []any{}}},
		}},
	}
	if o.usage != "none" {
		done.Usage = &u
	}
	if !req.Stream {
		writeJSON(w, http.StatusOK, done)
		return
	}

	st := startStream(w, r)
	seq := 0
	ev := func(typ string, fields map[string]any) error {
		fields["type"] = typ
		fields["sequence_number"] = seq
		seq++
		return st.event(typ, fields)
	}
	started := done
	started.Status, started.Output, started.Usage = "in_progress", []responseItem{}, nil
	if ev("response.created", map[string]any{"response": started}) != nil {
		return
	}
	streamErr := func() error {
		return ev("error", map[string]any{"code": "server_error", "message": midStreamError, "param": nil})
	}
	for i := range o.deltas {
		if !s.step(st, o, i, streamErr) {
			return
		}
		if ev("response.output_text.delta", map[string]any{
			"item_id": itemID, "output_index": 0, "content_index": 0, "delta": words[i%len(words)],
		}) != nil {
			return
		}
	}
	if !s.step(st, o, o.deltas, streamErr) {
		return
	}
	_ = ev("response.completed", map[string]any{"response": done})
}
