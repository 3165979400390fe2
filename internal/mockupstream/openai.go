package mockupstream

import (
	"encoding/json"
	"net/http"
	"strings"
)

// OpenAIUsage is the usage object of chat completions and completions.
type OpenAIUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

// DeepSeekUsage is DeepSeek's usage object: prompt_tokens is hit + miss.
type DeepSeekUsage struct {
	PromptTokens            int `json:"prompt_tokens"`
	CompletionTokens        int `json:"completion_tokens"`
	TotalTokens             int `json:"total_tokens"`
	PromptCacheHitTokens    int `json:"prompt_cache_hit_tokens"`
	PromptCacheMissTokens   int `json:"prompt_cache_miss_tokens"`
	CompletionTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

func openAIUsage(o options) OpenAIUsage {
	var u OpenAIUsage
	u.PromptTokens = o.prompt + o.cached
	u.CompletionTokens = o.deltas + o.reasoning
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	u.PromptTokensDetails.CachedTokens = o.cached
	u.CompletionTokensDetails.ReasoningTokens = o.reasoning
	return u
}

// usageJSON is the usage object in the X-Mock-Usage style, or
// X-Mock-Usage-Raw as sent.
func usageJSON(o options) json.RawMessage {
	if o.rawUsage != "" {
		return json.RawMessage(o.rawUsage)
	}
	var v any = openAIUsage(o)
	if o.usage == "deepseek" {
		var d DeepSeekUsage
		d.PromptCacheHitTokens, d.PromptCacheMissTokens = o.cached, o.prompt
		d.PromptTokens = o.prompt + o.cached
		d.CompletionTokens = o.deltas + o.reasoning
		d.TotalTokens = d.PromptTokens + d.CompletionTokens
		d.CompletionTokensDetails.ReasoningTokens = o.reasoning
		v = d
	}
	b, _ := json.Marshal(v)
	return b
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatChoice struct {
	Index        int          `json:"index"`
	Message      *chatMessage `json:"message,omitempty"`
	Text         *string      `json:"text,omitempty"`
	Logprobs     any          `json:"logprobs"`
	FinishReason string       `json:"finish_reason"`
}

type completionResponse struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Choices []chatChoice    `json:"choices"`
	Usage   json.RawMessage `json:"usage,omitempty"`
}

type chunkDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type chunkChoice struct {
	Index        int         `json:"index"`
	Delta        *chunkDelta `json:"delta,omitempty"` // chat
	Text         *string     `json:"text,omitempty"`  // completions
	Logprobs     any         `json:"logprobs"`
	FinishReason *string     `json:"finish_reason"`
}

type chunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []chunkChoice `json:"choices"`
	// Usage is absent unless usage was asked for; then it is null on every
	// chunk but the usage one (as OpenAI sends it).
	Usage json.RawMessage `json:"usage,omitempty"`
}

var jsonNull = json.RawMessage("null")

func ptr[T any](v T) *T { return &v }

// chatCompletions answers POST /v1/chat/completions.
func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	s.openAICompletion(w, r, true)
}

// completions answers the legacy POST /v1/completions.
func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	s.openAICompletion(w, r, false)
}

func (s *Server) openAICompletion(w http.ResponseWriter, r *http.Request, chat bool) {
	o, req, ok := begin(w, r, writeOpenAIError)
	if !ok {
		return
	}
	object, prefix := "text_completion", "cmpl-mock-"
	if chat {
		object, prefix = "chat.completion", "chatcmpl-mock-"
	}
	id := s.nextID(prefix)
	u := usageJSON(o)

	if !req.Stream {
		choice := chatChoice{FinishReason: "stop"}
		if chat {
			choice.Message = &chatMessage{Role: "assistant", Content: content(o.deltas)}
		} else {
			choice.Text = ptr(content(o.deltas))
		}
		resp := completionResponse{ID: id, Object: object, Created: Created, Model: req.Model, Choices: []chatChoice{choice}}
		if o.usage != "none" {
			resp.Usage = u
		}
		writeJSON(w, http.StatusOK, resp)
		return
	}

	if chat {
		object = "chat.completion.chunk"
	}
	usageChunk := req.includeUsage() && o.usage == "openai"
	mk := func(text *string, role bool, finish *string) chunk {
		c := chunk{ID: id, Object: object, Created: Created, Model: req.Model}
		ch := chunkChoice{FinishReason: finish}
		if chat {
			ch.Delta = &chunkDelta{Content: text}
			if role {
				ch.Delta.Role = "assistant"
			}
		} else {
			ch.Text = text
			if ch.Text == nil {
				ch.Text = ptr("")
			}
		}
		c.Choices = []chunkChoice{ch}
		if usageChunk {
			c.Usage = jsonNull
		}
		return c
	}

	st := startStream(w, r)
	if chat {
		if st.event("", mk(ptr(""), true, nil)) != nil {
			return
		}
	}
	streamErr := func() error { return st.event("", openAIErrorBody(http.StatusInternalServerError, midStreamError)) }
	for i := range o.deltas {
		if !s.step(st, o, i, streamErr) {
			return
		}
		text := words[i%len(words)]
		if i == 0 && o.longDelta > 0 {
			text = strings.Repeat("x", o.longDelta)
		}
		if st.event("", mk(&text, false, nil)) != nil {
			return
		}
	}
	if !s.step(st, o, o.deltas, streamErr) {
		return
	}
	last := mk(nil, false, ptr("stop"))
	if o.usage == "final" || o.usage == "deepseek" {
		last.Usage = u
	}
	if st.event("", last) != nil {
		return
	}
	if usageChunk {
		c := chunk{ID: id, Object: object, Created: Created, Model: req.Model, Choices: []chunkChoice{}, Usage: u}
		if st.event("", c) != nil {
			return
		}
	}
	_ = st.event("", "[DONE]")
}

// embeddings answers POST /v1/embeddings: one 8-dimensional vector per input.
func (s *Server) embeddings(w http.ResponseWriter, r *http.Request) {
	o, req, ok := begin(w, r, writeOpenAIError)
	if !ok {
		return
	}
	n := 1
	var list []json.RawMessage
	if json.Unmarshal(req.Input, &list) == nil && len(list) > 0 {
		n = len(list)
	}
	type embedding struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	}
	data := make([]embedding, n)
	for i := range data {
		v := make([]float64, 8)
		for j := range v {
			v[j] = float64((i+1)*(j+1)) / 100
		}
		data[i] = embedding{Object: "embedding", Index: i, Embedding: v}
	}
	resp := map[string]any{
		"object": "list",
		"data":   data,
		"model":  req.Model,
		"usage":  map[string]int{"prompt_tokens": o.prompt, "total_tokens": o.prompt},
	}
	writeJSON(w, http.StatusOK, resp)
}

// models answers GET /v1/models.
func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	data := make([]model, len(Models))
	for i, m := range Models {
		data[i] = model{ID: m, Object: "model", Created: Created, OwnedBy: "mockupstream"}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

// midStreamError is the message of an X-Mock-Error-After error event.
const midStreamError = "mock upstream error mid-stream (X-Mock-Error-After)"

// writeOpenAIError writes {"error":{"message","type","param","code"}}.
func writeOpenAIError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, openAIErrorBody(status, msg))
}

// openAIErrorBody is {"error":{"message","type","param","code"}}.
func openAIErrorBody(status int, msg string) map[string]any {
	typ, code := "server_error", "server_error"
	switch {
	case status == http.StatusUnauthorized:
		typ, code = "invalid_request_error", "invalid_api_key"
	case status == http.StatusNotFound:
		typ, code = "invalid_request_error", "not_found"
	case status == http.StatusTooManyRequests:
		typ, code = "rate_limit_error", "rate_limit_exceeded"
	case status >= 400 && status < 500:
		typ, code = "invalid_request_error", "invalid_request_error"
	}
	return map[string]any{"error": map[string]any{
		"message": msg, "type": typ, "param": nil, "code": code,
	}}
}
