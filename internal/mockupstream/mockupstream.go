// Package mockupstream is a deterministic model provider for tests and
// `make run`: OpenAI-compatible chat completions, completions, embeddings,
// responses and models, and Anthropic-compatible messages, as JSON or SSE.
//
// Usage is deterministic: the uncached prompt is 12 tokens (X-Mock-Prompt),
// cached prompt tokens come from X-Mock-Cached, and every content delta is one
// completion token (X-Mock-Deltas, default 5), plus X-Mock-Reasoning hidden
// reasoning tokens. So, for example, an OpenAI chat response reports
// prompt_tokens = 12 + cached and completion_tokens = deltas + reasoning; an
// Anthropic one input_tokens = 12, cache_read_input_tokens = cached,
// cache_creation_input_tokens = X-Mock-Cache-Write and output_tokens =
// deltas + reasoning.
//
// Request headers that steer a response (all optional):
//
//	X-Mock-Deltas: N     content deltas (completion tokens); default 5
//	X-Mock-Delay: 10ms   pause before each delta after the first
//	X-Mock-Status: 500   answer with this status and an error JSON instead
//	X-Mock-Cached: N     cached prompt tokens; default 0
//	X-Mock-Prompt: N     uncached prompt tokens; default 12
//	X-Mock-Hold: 1       stream: after the first delta, block until the client
//	                     goes away or Server.Release is called (or
//	                     POST /mock/release is)
//	X-Mock-Cut: N        stream: drop the connection after N deltas, with no
//	                     usage and no terminator (an upstream cut off)
//	X-Mock-Usage: mode   chat and completions: "openai" (default; a stream
//	                     reports usage only when stream_options.include_usage
//	                     is true, in a last chunk with "choices":[]), "final"
//	                     (usage on the finish_reason chunk, asked or not),
//	                     "deepseek" (as final, with DeepSeek's
//	                     prompt_cache_hit_tokens / prompt_cache_miss_tokens in
//	                     place of prompt_tokens_details) or "none" (never any
//	                     usage); responses: "none" leaves usage null
//	X-Mock-Reasoning: N  hidden reasoning tokens, counted in the completion /
//	                     output tokens and reported as reasoning_tokens (chat,
//	                     completions, responses; Anthropic: in output_tokens);
//	                     they are not streamed as deltas; default 0
//	X-Mock-Error-After: N  stream: after N deltas send an error event and end
//	                     the stream (no usage, no terminator): chat and
//	                     completions "data: {"error":{…}}", Anthropic
//	                     "event: error", responses "event: error"
//	X-Mock-Cache-Write: N  Anthropic: cache_creation_input_tokens; default 0
//	X-Mock-Message-Deltas: N  Anthropic stream: N message_delta events with
//	                     cumulative usage (the last one has the totals, and all
//	                     repeat the input counts); default 1
//	X-Mock-Usage-Raw: J  chat and completions: the usage object is J, as
//	                     sent (a lying or broken upstream), where usage goes
//	X-Mock-Long-Delta: N stream: the first content delta is N bytes of "x"
//	                     (one SSE line of any length), still one token
//	X-Mock-Wait: 2s      wait this long before answering (or until the
//	                     client goes away, then answer nothing)
//	X-Mock-Gzip: 1       gzip the response body (Content-Encoding: gzip)
//	                     whatever the request's Accept-Encoding; a stream's
//	                     gzip writer is flushed after every event
//
// Every SSE event is written with one Write and flushed at once.
package mockupstream

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// DefaultDeltas is the number of content deltas when X-Mock-Deltas is unset.
const DefaultDeltas = 5

// DefaultPromptTokens is the uncached prompt size when X-Mock-Prompt is unset.
const DefaultPromptTokens = 12

// Created is the fixed "created" timestamp of every response.
const Created = 1767225600 // 2026-01-01T00:00:00Z

// maxRecorded is how many requests Requests remembers.
const maxRecorded = 64

// maxBody caps a request body the mock reads.
const maxBody = 16 << 20

// Models is what GET /v1/models lists. Any other model name is accepted too.
var Models = []string{"deepseek-v4-flash", "deepseek-v4-pro", "gpt-4o-mini", "claude-sonnet-4-5"}

// words make up the deterministic content; delta i is words[i%len(words)].
var words = []string{"Hello", " from", " the", " mock", " upstream", "."}

// Recorded is one request as the mock received it.
type Recorded struct {
	Method string
	Path   string // path and query
	Header http.Header
	Body   []byte
	Time   time.Time
}

// Server is the mock provider; it is an http.Handler. The zero value is not
// usable: call New.
type Server struct {
	mux *http.ServeMux

	mu      sync.Mutex
	reqs    []Recorded
	release chan struct{}
	seq     int
}

// New returns a mock provider.
func New() *Server {
	s := &Server{release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.chatCompletions)
	mux.HandleFunc("POST /v1/completions", s.completions)
	mux.HandleFunc("POST /v1/embeddings", s.embeddings)
	mux.HandleFunc("POST /v1/responses", s.responses)
	mux.HandleFunc("POST /v1/messages", s.messages)
	mux.HandleFunc("GET /v1/models", s.models)
	// Release over HTTP, for a mock in another process.
	mux.HandleFunc("POST /mock/release", func(w http.ResponseWriter, r *http.Request) {
		s.Release()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeOpenAIError(w, http.StatusNotFound, "unknown path "+r.URL.Path)
	})
	s.mux = mux
	return s
}

// ServeHTTP records the request and answers it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if v := r.Header.Get("X-Mock-Gzip"); v != "" && v != "0" && v != "false" {
		gw := newGzipWriter(w)
		s.serve(gw, r)
		// Not deferred: after a cut (a panic) the stream must stay unfinished.
		_ = gw.Close()
		return
	}
	s.serve(w, r)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		writeOpenAIError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	// Take the release channel now, before any delta is sent: a Release
	// that follows the client's read of the first delta must free this
	// request, not a later one.
	r = r.WithContext(context.WithValue(r.Context(), releaseKey{}, s.releaseChan()))
	s.record(Recorded{
		Method: r.Method,
		Path:   r.URL.RequestURI(),
		Header: r.Header.Clone(),
		Body:   body,
		Time:   time.Now(),
	})
	s.mux.ServeHTTP(w, r)
}

// Requests returns the last requests received (at most 64), oldest first.
func (s *Server) Requests() []Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Recorded(nil), s.reqs...)
}

// LastRequest returns the most recent request, if any.
func (s *Server) LastRequest() (Recorded, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		return Recorded{}, false
	}
	return s.reqs[len(s.reqs)-1], true
}

// Reset forgets the recorded requests.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = nil
}

// Release lets every stream currently held by X-Mock-Hold go on. Streams
// that reach their hold later wait for the next Release.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.release)
	s.release = make(chan struct{})
}

func (s *Server) record(r Recorded) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == maxRecorded {
		copy(s.reqs, s.reqs[1:])
		s.reqs = s.reqs[:maxRecorded-1]
	}
	s.reqs = append(s.reqs, r)
}

func (s *Server) nextID(prefix string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return prefix + strconv.Itoa(s.seq)
}

// releaseKey holds, in a request's context, the release channel current
// when the request arrived.
type releaseKey struct{}

func (s *Server) releaseChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.release
}

// options are the X-Mock-* request headers.
type options struct {
	deltas int
	delay  time.Duration
	status int
	cached int
	prompt int
	hold   bool
	cut    int // 0: no cut
	usage  string

	reasoning     int
	errAfter      int // -1: no error event
	cacheWrite    int
	messageDeltas int
	longDelta     int
	rawUsage      string
	wait          time.Duration
}

func parseOptions(h http.Header) (options, error) {
	o := options{deltas: DefaultDeltas, prompt: DefaultPromptTokens, usage: "openai", errAfter: -1, messageDeltas: 1}
	var err error
	ints := []struct {
		name string
		dst  *int
	}{
		{"X-Mock-Deltas", &o.deltas},
		{"X-Mock-Status", &o.status},
		{"X-Mock-Cached", &o.cached},
		{"X-Mock-Prompt", &o.prompt},
		{"X-Mock-Cut", &o.cut},
		{"X-Mock-Reasoning", &o.reasoning},
		{"X-Mock-Error-After", &o.errAfter},
		{"X-Mock-Cache-Write", &o.cacheWrite},
		{"X-Mock-Message-Deltas", &o.messageDeltas},
		{"X-Mock-Long-Delta", &o.longDelta},
	}
	for _, f := range ints {
		v := h.Get(f.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return o, fmt.Errorf("bad %s: %q", f.name, v)
		}
		*f.dst = n
	}
	if o.messageDeltas < 1 {
		return o, fmt.Errorf("bad X-Mock-Message-Deltas: %d", o.messageDeltas)
	}
	if o.status != 0 && (o.status < 200 || o.status > 599) {
		return o, fmt.Errorf("bad X-Mock-Status: %d", o.status)
	}
	if v := h.Get("X-Mock-Delay"); v != "" {
		if o.delay, err = time.ParseDuration(v); err != nil {
			return o, fmt.Errorf("bad X-Mock-Delay: %q", v)
		}
	}
	if v := h.Get("X-Mock-Wait"); v != "" {
		if o.wait, err = time.ParseDuration(v); err != nil {
			return o, fmt.Errorf("bad X-Mock-Wait: %q", v)
		}
	}
	if v := h.Get("X-Mock-Usage-Raw"); v != "" {
		if !json.Valid([]byte(v)) {
			return o, fmt.Errorf("bad X-Mock-Usage-Raw: %q", v)
		}
		o.rawUsage = v
	}
	if v := h.Get("X-Mock-Hold"); v != "" {
		o.hold = v != "0" && v != "false"
	}
	if v := h.Get("X-Mock-Usage"); v != "" {
		switch v {
		case "openai", "final", "deepseek", "none":
			o.usage = v
		default:
			return o, fmt.Errorf("bad X-Mock-Usage: %q", v)
		}
	}
	return o, nil
}

// request is the part of a request body the mock looks at.
type request struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Input json.RawMessage `json:"input"`
}

func (r request) includeUsage() bool { return r.StreamOptions != nil && r.StreamOptions.IncludeUsage }

// begin parses the options and body shared by every POST endpoint. It writes
// the error response itself and returns ok=false when the request must end.
func begin(w http.ResponseWriter, r *http.Request, writeErr func(http.ResponseWriter, int, string)) (options, request, bool) {
	var req request
	o, err := parseOptions(r.Header)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return o, req, false
	}
	if o.status != 0 {
		writeErr(w, o.status, "mock upstream error (X-Mock-Status)")
		return o, req, false
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, "body is not JSON: "+err.Error())
		return o, req, false
	}
	if req.Model == "" {
		writeErr(w, http.StatusBadRequest, "missing model")
		return o, req, false
	}
	if o.wait > 0 {
		// "Thinking" before the answer: the client may leave meanwhile.
		t := time.NewTimer(o.wait)
		defer t.Stop()
		select {
		case <-r.Context().Done():
			return o, req, false
		case <-t.C:
		}
	}
	return o, req, true
}

// content is the deterministic text of n deltas.
func content(n int) string {
	var b bytes.Buffer
	for i := range n {
		b.WriteString(words[i%len(words)])
	}
	return b.String()
}

// stream writes SSE events, one Write and one Flush each.
type stream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	ctx context.Context
	buf bytes.Buffer
}

func startStream(w http.ResponseWriter, r *http.Request) *stream {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Connection", "keep-alive")
	w.WriteHeader(http.StatusOK)
	return &stream{w: w, rc: http.NewResponseController(w), ctx: r.Context()}
}

// event writes one event: an optional "event:" line and one "data:" line.
// v is JSON-encoded unless it is a string.
func (st *stream) event(name string, v any) error {
	st.buf.Reset()
	if name != "" {
		st.buf.WriteString("event: " + name + "\n")
	}
	st.buf.WriteString("data: ")
	if s, ok := v.(string); ok {
		st.buf.WriteString(s)
	} else {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		st.buf.Write(b)
	}
	st.buf.WriteString("\n\n")
	if _, err := st.w.Write(st.buf.Bytes()); err != nil {
		return err
	}
	return st.rc.Flush()
}

// pace runs before delta i, and with i == o.deltas before the end of the
// stream: it drops the connection when i is the X-Mock-Cut count, blocks at
// the hold point (after the first delta) and waits X-Mock-Delay between
// deltas. It returns an error when the client went away.
func (s *Server) pace(st *stream, o options, i int) error {
	if o.cut > 0 && i == o.cut {
		panic(http.ErrAbortHandler) // drop the connection mid-stream
	}
	if i == 1 && o.hold {
		select {
		case <-st.ctx.Done():
			return st.ctx.Err()
		case <-st.ctx.Value(releaseKey{}).(<-chan struct{}):
		}
	}
	if i > 0 && i < o.deltas && o.delay > 0 {
		t := time.NewTimer(o.delay)
		defer t.Stop()
		select {
		case <-st.ctx.Done():
			return st.ctx.Err()
		case <-t.C:
		}
	}
	return st.ctx.Err()
}

// step runs before delta i, and with i == o.deltas before the end of the
// stream: pace, then the X-Mock-Error-After error event, written by
// writeErr. It returns false when the stream must end.
func (s *Server) step(st *stream, o options, i int, writeErr func() error) bool {
	if s.pace(st, o, i) != nil {
		return false
	}
	if o.errAfter >= 0 && i == min(o.errAfter, o.deltas) {
		_ = writeErr()
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
