package mockupstream

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type sseEvent struct {
	name string
	data string
}

func post(t *testing.T, url, body string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// readEvent reads one SSE event (simple framing: one data line).
func readEvent(br *bufio.Reader) (sseEvent, error) {
	var ev sseEvent
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			return ev, nil
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
}

func readAll(t *testing.T, r io.Reader) []sseEvent {
	t.Helper()
	br := bufio.NewReader(r)
	var evs []sseEvent
	for {
		ev, err := readEvent(br)
		if err == io.EOF {
			return evs
		}
		if err != nil {
			t.Fatalf("reading stream: %v", err)
		}
		evs = append(evs, ev)
	}
}

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return m
}

func newTest(t *testing.T) (*Server, *httptest.Server) {
	m := New()
	ts := httptest.NewServer(m)
	t.Cleanup(ts.Close)
	return m, ts
}

const chatBody = `{"model":"deepseek-v4-flash","messages":[{"role":"user","content":"Hi"}]}`

func TestChatJSON(t *testing.T) {
	_, ts := newTest(t)
	resp := post(t, ts.URL+"/v1/chat/completions", chatBody, map[string]string{"X-Mock-Cached": "3"})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var got struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage OpenAIUsage `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Object != "chat.completion" || got.Model != "deepseek-v4-flash" {
		t.Errorf("object/model = %q/%q", got.Object, got.Model)
	}
	if c := got.Choices[0].Message.Content; c != "Hello from the mock upstream" {
		t.Errorf("content = %q", c)
	}
	u := got.Usage
	if u.PromptTokens != 15 || u.PromptTokensDetails.CachedTokens != 3 || u.CompletionTokens != 5 || u.TotalTokens != 20 {
		t.Errorf("usage = %+v", u)
	}
}

func TestChatStreamWithoutUsage(t *testing.T) {
	_, ts := newTest(t)
	resp := post(t, ts.URL+"/v1/chat/completions",
		`{"model":"m","stream":true,"messages":[]}`, map[string]string{"X-Mock-Deltas": "3"})
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	evs := readAll(t, resp.Body)
	// role chunk, 3 deltas, finish chunk, [DONE]
	if len(evs) != 6 || evs[5].data != "[DONE]" {
		t.Fatalf("events = %+v", evs)
	}
	var text strings.Builder
	for _, ev := range evs[:5] {
		if strings.Contains(ev.data, `"usage"`) {
			t.Errorf("usage key without include_usage: %s", ev.data)
		}
		m := decode(t, ev.data)
		if m["object"] != "chat.completion.chunk" {
			t.Errorf("object = %v", m["object"])
		}
		d := m["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
		if c, ok := d["content"].(string); ok {
			text.WriteString(c)
		}
	}
	if text.String() != "Hello from the" {
		t.Errorf("text = %q", text.String())
	}
	if !strings.Contains(evs[4].data, `"finish_reason":"stop"`) {
		t.Errorf("last chunk = %s", evs[4].data)
	}
}

func TestChatStreamIncludeUsage(t *testing.T) {
	_, ts := newTest(t)
	resp := post(t, ts.URL+"/v1/chat/completions",
		`{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`,
		map[string]string{"X-Mock-Cached": "2"})
	evs := readAll(t, resp.Body)
	n := len(evs)
	if n != 1+5+1+1+1 || evs[n-1].data != "[DONE]" {
		t.Fatalf("events = %+v", evs)
	}
	for _, ev := range evs[:n-2] {
		if !strings.Contains(ev.data, `"usage":null`) {
			t.Errorf("chunk without usage:null: %s", ev.data)
		}
	}
	last := decode(t, evs[n-2].data)
	if ch := last["choices"].([]any); len(ch) != 0 {
		t.Errorf("usage chunk choices = %v", ch)
	}
	u := last["usage"].(map[string]any)
	if u["prompt_tokens"] != 14.0 || u["completion_tokens"] != 5.0 || u["total_tokens"] != 19.0 {
		t.Errorf("usage = %v", u)
	}
	if c := u["prompt_tokens_details"].(map[string]any)["cached_tokens"]; c != 2.0 {
		t.Errorf("cached = %v", c)
	}
}

func TestChatStreamUsageModes(t *testing.T) {
	_, ts := newTest(t)
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`

	evs := readAll(t, post(t, ts.URL+"/v1/chat/completions", body, map[string]string{"X-Mock-Usage": "none"}).Body)
	for _, ev := range evs {
		if strings.Contains(ev.data, `"prompt_tokens"`) {
			t.Errorf("usage with X-Mock-Usage none: %s", ev.data)
		}
	}

	evs = readAll(t, post(t, ts.URL+"/v1/chat/completions", `{"model":"m","stream":true}`,
		map[string]string{"X-Mock-Usage": "final"}).Body)
	fin := evs[len(evs)-2].data
	if !strings.Contains(fin, `"finish_reason":"stop"`) || !strings.Contains(fin, `"completion_tokens":5`) {
		t.Errorf("final chunk = %s", fin)
	}
}

func TestErrorStatus(t *testing.T) {
	_, ts := newTest(t)
	resp := post(t, ts.URL+"/v1/chat/completions", chatBody, map[string]string{"X-Mock-Status": "500"})
	if resp.StatusCode != 500 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	m := decode(t, mustRead(t, resp.Body))
	e := m["error"].(map[string]any)
	if e["type"] != "server_error" || e["message"] == "" {
		t.Errorf("error = %v", e)
	}

	resp = post(t, ts.URL+"/v1/messages", chatBody, map[string]string{"X-Mock-Status": "529"})
	m = decode(t, mustRead(t, resp.Body))
	if resp.StatusCode != 529 || m["type"] != "error" || m["error"].(map[string]any)["type"] != "overloaded_error" {
		t.Errorf("anthropic error %d %v", resp.StatusCode, m)
	}

	resp = post(t, ts.URL+"/v1/chat/completions", `not json`, nil)
	if resp.StatusCode != 400 {
		t.Errorf("bad body: status %d", resp.StatusCode)
	}
}

func mustRead(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHoldDeliversFirstDeltaBeforeEnd(t *testing.T) {
	m, ts := newTest(t)
	resp := post(t, ts.URL+"/v1/chat/completions", `{"model":"m","stream":true}`, map[string]string{"X-Mock-Hold": "1"})
	br := bufio.NewReader(resp.Body)
	for _, want := range []string{`"role":"assistant"`, `"content":"Hello"`} {
		ev, err := readEvent(br)
		if err != nil || !strings.Contains(ev.data, want) {
			t.Fatalf("event %q (%v), want %s", ev.data, err, want)
		}
	}
	// The stream is held: nothing else arrives until Release.
	next := make(chan sseEvent, 1)
	go func() {
		ev, _ := readEvent(br)
		next <- ev
	}()
	select {
	case ev := <-next:
		t.Fatalf("event before release: %q", ev.data)
	case <-time.After(50 * time.Millisecond):
	}
	m.Release()
	select {
	case ev := <-next:
		if !strings.Contains(ev.data, `" from"`) {
			t.Fatalf("after release: %q", ev.data)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event after release")
	}
	if evs := readAll(t, br); evs[len(evs)-1].data != "[DONE]" {
		t.Fatalf("stream did not finish: %+v", evs)
	}
}

func TestHoldEndsWhenClientGoes(t *testing.T) {
	_, ts := newTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","stream":true}`))
	req.Header.Set("X-Mock-Hold", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	_, _ = readEvent(br)
	_, _ = readEvent(br)
	cancel()
	resp.Body.Close()
	// ts.Close (cleanup) blocks until the handler returns.
}

func TestCut(t *testing.T) {
	_, ts := newTest(t)
	resp := post(t, ts.URL+"/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
		map[string]string{"X-Mock-Cut": "2"})
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Errorf("cut stream ended cleanly")
	}
	s := string(b)
	if !strings.Contains(s, `"content":" from"`) || strings.Contains(s, `"mock"`) || strings.Contains(s, "[DONE]") {
		t.Errorf("cut stream = %q", s)
	}
}

func TestDelay(t *testing.T) {
	_, ts := newTest(t)
	start := time.Now()
	resp := post(t, ts.URL+"/v1/chat/completions", `{"model":"m","stream":true}`,
		map[string]string{"X-Mock-Deltas": "3", "X-Mock-Delay": "30ms"})
	readAll(t, resp.Body)
	if d := time.Since(start); d < 60*time.Millisecond {
		t.Errorf("took %s, want >= 60ms", d)
	}
}

func TestRecordsRequests(t *testing.T) {
	m, ts := newTest(t)
	post(t, ts.URL+"/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer upstream-key"})
	post(t, ts.URL+"/v1/embeddings", `{"model":"e","input":["a","b"]}`, nil)
	reqs := m.Requests()
	if len(reqs) != 2 {
		t.Fatalf("recorded %d", len(reqs))
	}
	if reqs[0].Path != "/v1/chat/completions" || reqs[0].Header.Get("Authorization") != "Bearer upstream-key" ||
		string(reqs[0].Body) != chatBody {
		t.Errorf("first = %+v", reqs[0])
	}
	if last, _ := m.LastRequest(); last.Path != "/v1/embeddings" {
		t.Errorf("last = %+v", last)
	}
	m.Reset()
	if len(m.Requests()) != 0 {
		t.Error("Reset kept requests")
	}
	for range maxRecorded + 5 {
		post(t, ts.URL+"/v1/models", "", nil)
	}
	if n := len(m.Requests()); n != maxRecorded {
		t.Errorf("kept %d, want %d", n, maxRecorded)
	}
}

func TestEmbeddingsAndModels(t *testing.T) {
	_, ts := newTest(t)
	m := decode(t, mustRead(t, post(t, ts.URL+"/v1/embeddings", `{"model":"e","input":["a","b"]}`, nil).Body))
	if len(m["data"].([]any)) != 2 || m["usage"].(map[string]any)["prompt_tokens"] != 12.0 {
		t.Errorf("embeddings = %v", m)
	}
	resp, err := http.Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m = decode(t, mustRead(t, resp.Body))
	if m["object"] != "list" || len(m["data"].([]any)) != len(Models) {
		t.Errorf("models = %v", m)
	}
}

func TestAnthropicStream(t *testing.T) {
	_, ts := newTest(t)
	evs := readAll(t, post(t, ts.URL+"/v1/messages", `{"model":"claude","stream":true,"max_tokens":10}`,
		map[string]string{"X-Mock-Cached": "100", "X-Mock-Deltas": "4"}).Body)
	var names []string
	for _, ev := range evs {
		names = append(names, ev.name)
		if typ := decode(t, ev.data)["type"]; typ != ev.name {
			t.Errorf("event %s has type %v", ev.name, typ)
		}
	}
	want := "message_start content_block_start ping content_block_delta content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("events = %s", got)
	}
	u := decode(t, evs[0].data)["message"].(map[string]any)["usage"].(map[string]any)
	if u["input_tokens"] != 12.0 || u["cache_read_input_tokens"] != 100.0 {
		t.Errorf("start usage = %v", u)
	}
	if u := decode(t, evs[8].data)["usage"].(map[string]any); u["output_tokens"] != 4.0 {
		t.Errorf("delta usage = %v", u)
	}
}

func TestResponsesStream(t *testing.T) {
	_, ts := newTest(t)
	evs := readAll(t, post(t, ts.URL+"/v1/responses", `{"model":"gpt-4o-mini","stream":true,"input":"Hi"}`, nil).Body)
	if len(evs) != 7 || evs[0].name != "response.created" || evs[6].name != "response.completed" {
		t.Fatalf("events = %+v", evs)
	}
	resp := decode(t, evs[6].data)["response"].(map[string]any)
	u := resp["usage"].(map[string]any)
	if resp["status"] != "completed" || u["input_tokens"] != 12.0 || u["output_tokens"] != 5.0 {
		t.Errorf("completed = %v", resp)
	}
	for _, ev := range evs {
		if ev.data == "[DONE]" {
			t.Error("responses stream sent [DONE]")
		}
	}
}

func TestCompletionsLegacy(t *testing.T) {
	_, ts := newTest(t)
	m := decode(t, mustRead(t, post(t, ts.URL+"/v1/completions", `{"model":"m","prompt":"x"}`, nil).Body))
	if m["object"] != "text_completion" || m["choices"].([]any)[0].(map[string]any)["text"] != "Hello from the mock upstream" {
		t.Errorf("completion = %v", m)
	}
	evs := readAll(t, post(t, ts.URL+"/v1/completions", `{"model":"m","prompt":"x","stream":true}`, nil).Body)
	if len(evs) != 7 || evs[6].data != "[DONE]" {
		t.Errorf("events = %+v", evs)
	}
}

func TestReasoningTokens(t *testing.T) {
	_, ts := newTest(t)
	hdr := map[string]string{"X-Mock-Reasoning": "7", "X-Mock-Deltas": "3"}
	m := decode(t, mustRead(t, post(t, ts.URL+"/v1/chat/completions", chatBody, hdr).Body))
	u := m["usage"].(map[string]any)
	if u["completion_tokens"] != 10.0 || u["total_tokens"] != 22.0 ||
		u["completion_tokens_details"].(map[string]any)["reasoning_tokens"] != 7.0 {
		t.Errorf("chat usage = %v", u)
	}
	if c := m["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"]; c != "Hello from the" {
		t.Errorf("reasoning was streamed as content: %q", c)
	}

	evs := readAll(t, post(t, ts.URL+"/v1/responses", `{"model":"m","stream":true,"input":"x"}`, hdr).Body)
	if len(evs) != 5 {
		t.Fatalf("responses events = %+v", evs)
	}
	u = decode(t, evs[4].data)["response"].(map[string]any)["usage"].(map[string]any)
	if u["output_tokens"] != 10.0 || u["output_tokens_details"].(map[string]any)["reasoning_tokens"] != 7.0 {
		t.Errorf("responses usage = %v", u)
	}

	m = decode(t, mustRead(t, post(t, ts.URL+"/v1/messages", `{"model":"m","max_tokens":9}`, hdr).Body))
	if u := m["usage"].(map[string]any); u["output_tokens"] != 10.0 {
		t.Errorf("anthropic usage = %v", u)
	}
}

func TestDeepSeekUsageMode(t *testing.T) {
	_, ts := newTest(t)
	hdr := map[string]string{"X-Mock-Usage": "deepseek", "X-Mock-Cached": "30", "X-Mock-Reasoning": "2"}
	evs := readAll(t, post(t, ts.URL+"/v1/chat/completions", `{"model":"m","stream":true}`, hdr).Body)
	// role, 5 deltas, finish chunk with usage, [DONE]: no usage-only chunk
	if len(evs) != 8 || evs[7].data != "[DONE]" {
		t.Fatalf("events = %+v", evs)
	}
	fin := decode(t, evs[6].data)
	if ch := fin["choices"].([]any); len(ch) != 1 || ch[0].(map[string]any)["finish_reason"] != "stop" {
		t.Errorf("final chunk = %s", evs[6].data)
	}
	u := fin["usage"].(map[string]any)
	if u["prompt_tokens"] != 42.0 || u["prompt_cache_hit_tokens"] != 30.0 || u["prompt_cache_miss_tokens"] != 12.0 ||
		u["completion_tokens"] != 7.0 || u["prompt_tokens_details"] != nil {
		t.Errorf("usage = %v", u)
	}
	m := decode(t, mustRead(t, post(t, ts.URL+"/v1/chat/completions", chatBody, hdr).Body))
	if u := m["usage"].(map[string]any); u["prompt_cache_hit_tokens"] != 30.0 {
		t.Errorf("JSON usage = %v", u)
	}
}

func TestErrorAfter(t *testing.T) {
	_, ts := newTest(t)
	hdr := map[string]string{"X-Mock-Error-After": "2"}

	evs := readAll(t, post(t, ts.URL+"/v1/chat/completions",
		`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, hdr).Body)
	// role chunk, 2 deltas, the error; no usage, no [DONE]
	if len(evs) != 4 {
		t.Fatalf("chat events = %+v", evs)
	}
	e := decode(t, evs[3].data)["error"].(map[string]any)
	if e["type"] != "server_error" || e["message"] == "" {
		t.Errorf("chat error event = %s", evs[3].data)
	}

	evs = readAll(t, post(t, ts.URL+"/v1/messages", `{"model":"m","stream":true,"max_tokens":9}`, hdr).Body)
	var names []string
	for _, ev := range evs {
		names = append(names, ev.name)
	}
	if got := strings.Join(names, " "); got != "message_start content_block_start ping content_block_delta content_block_delta error" {
		t.Fatalf("anthropic events = %s", got)
	}
	if m := decode(t, evs[5].data); m["type"] != "error" || m["error"].(map[string]any)["type"] != "overloaded_error" {
		t.Errorf("anthropic error = %s", evs[5].data)
	}

	evs = readAll(t, post(t, ts.URL+"/v1/responses", `{"model":"m","stream":true,"input":"x"}`, hdr).Body)
	if len(evs) != 4 || evs[3].name != "error" {
		t.Fatalf("responses events = %+v", evs)
	}
	if m := decode(t, evs[3].data); m["type"] != "error" || m["code"] != "server_error" || m["sequence_number"] != 3.0 {
		t.Errorf("responses error = %s", evs[3].data)
	}

	// At or past the number of deltas: the error comes after the last one.
	evs = readAll(t, post(t, ts.URL+"/v1/completions", `{"model":"m","stream":true}`,
		map[string]string{"X-Mock-Error-After": "9", "X-Mock-Deltas": "3"}).Body)
	if len(evs) != 4 || !strings.Contains(evs[3].data, `"error"`) {
		t.Fatalf("completions events = %+v", evs)
	}
}

func TestAnthropicCacheWriteAndCumulativeDeltas(t *testing.T) {
	_, ts := newTest(t)
	hdr := map[string]string{"X-Mock-Cache-Write": "40", "X-Mock-Cached": "100", "X-Mock-Message-Deltas": "3", "X-Mock-Deltas": "6"}
	m := decode(t, mustRead(t, post(t, ts.URL+"/v1/messages", `{"model":"m","max_tokens":9}`, hdr).Body))
	if u := m["usage"].(map[string]any); u["cache_creation_input_tokens"] != 40.0 || u["cache_read_input_tokens"] != 100.0 ||
		u["input_tokens"] != 12.0 || u["output_tokens"] != 6.0 {
		t.Errorf("JSON usage = %v", u)
	}
	evs := readAll(t, post(t, ts.URL+"/v1/messages", `{"model":"m","stream":true,"max_tokens":9}`, hdr).Body)
	if u := decode(t, evs[0].data)["message"].(map[string]any)["usage"].(map[string]any); u["cache_creation_input_tokens"] != 40.0 {
		t.Errorf("start usage = %v", u)
	}
	var outs []float64
	for _, ev := range evs {
		if ev.name != "message_delta" {
			continue
		}
		m := decode(t, ev.data)
		u := m["usage"].(map[string]any)
		outs = append(outs, u["output_tokens"].(float64))
		if u["input_tokens"] != 12.0 || u["cache_read_input_tokens"] != 100.0 || u["cache_creation_input_tokens"] != 40.0 {
			t.Errorf("message_delta usage = %v", u)
		}
	}
	if len(outs) != 3 || outs[0] != 2 || outs[1] != 4 || outs[2] != 6 {
		t.Errorf("cumulative output_tokens = %v", outs)
	}
	if evs[len(evs)-1].name != "message_stop" || !strings.Contains(evs[len(evs)-2].data, `"stop_reason":"end_turn"`) {
		t.Errorf("end = %+v", evs[len(evs)-2:])
	}
}

func TestGzip(t *testing.T) {
	m, ts := newTest(t)
	// A client that asks for identity still gets gzip, and the body
	// decodes to the usual answer.
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/chat/completions", strings.NewReader(chatBody))
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("X-Mock-Gzip", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("headers = %v", resp.Header)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if u := decode(t, mustRead(t, zr))["usage"].(map[string]any); u["completion_tokens"] != 5.0 {
		t.Errorf("usage = %v", u)
	}

	// A stream is flushed event by event: the first delta decodes while
	// the stream is held open.
	req, _ = http.NewRequest(http.MethodPost, ts.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true}`))
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("X-Mock-Gzip", "1")
	req.Header.Set("X-Mock-Hold", "1")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream headers = %v", resp.Header)
	}
	zr, err = gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(zr)
	for _, want := range []string{`"role":"assistant"`, `"content":"Hello"`} {
		ev, err := readEvent(br)
		if err != nil || !strings.Contains(ev.data, want) {
			t.Fatalf("event %q (%v), want %s", ev.data, err, want)
		}
	}
	m.Release()
	if evs := readAll(t, br); evs[len(evs)-1].data != "[DONE]" {
		t.Fatalf("stream did not finish: %+v", evs)
	}

	// A cut gzip stream is left unfinished.
	resp = post(t, ts.URL+"/v1/chat/completions", `{"model":"m","stream":true}`,
		map[string]string{"X-Mock-Gzip": "1", "X-Mock-Cut": "2", "Accept-Encoding": "identity"})
	zr, err = gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err == nil || !strings.Contains(string(b), `" from"`) || strings.Contains(string(b), "[DONE]") {
		t.Errorf("cut gzip stream: %q, %v", b, err)
	}
}
