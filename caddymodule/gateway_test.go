package caddymodule_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func client(key string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(gatewayURL + "/v1/"),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
	}, opts...)...)
}

func chatParams(model string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
	}
}

// apiErr checks an error answer's status and OpenAI error code.
func apiErr(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    string  `json:"code"`
			Param   *string `json:"param"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != code || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("error body %s, want code %q", body, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
}

func TestRefusalsNeverReachUpstream(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	_, revoked := newAccount(t, "1.00", "")
	if st := admin(t, "DELETE", "/aitoken/keys/"+revoked.ID, "", nil); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}
	_, broke := newAccount(t, "", "")
	_, limited := newAccount(t, "1.00", `{"user":"$USER","models":["other-model"]}`)

	chat := `{"model":"test-model","messages":[{"role":"user","content":"hi"}]}`
	before := len(env.mock.Requests())
	for _, tc := range []struct {
		name, path, key, body string
		status                int
		code                  string
	}{
		{"no key", "/v1/chat/completions", "", chat, 401, "missing_api_key"},
		{"unknown key", "/v1/chat/completions", "sk-ait-unknown", chat, 401, "invalid_api_key"},
		{"revoked key", "/v1/chat/completions", revoked.Key, chat, 401, "invalid_api_key"},
		{"unknown key beats bad body", "/v1/chat/completions", "sk-ait-unknown", `{`, 401, "invalid_api_key"},
		{"unpriced model", "/v1/chat/completions", k.Key, `{"model":"free-lunch","messages":[]}`, 404, "model_not_found"},
		{"model not allowed for key", "/v1/chat/completions", limited.Key, chat, 403, "model_not_allowed"},
		{"model not allowed on route", "/limited/v1/chat/completions", k.Key, `{"model":"other-model"}`, 403, "model_not_allowed"},
		{"no balance", "/v1/chat/completions", broke.Key, chat, 402, "insufficient_quota"},
		{"hold over balance", "/v1/chat/completions", k.Key, `{"model":"test-model","max_tokens":600000}`, 402, "insufficient_quota"},
		{"malformed JSON", "/v1/chat/completions", k.Key, `{"model":`, 400, "invalid_request_error"},
		{"not an object", "/v1/chat/completions", k.Key, `[1,2]`, 400, "invalid_request_error"},
		{"missing model", "/v1/chat/completions", k.Key, `{"messages":[]}`, 400, "invalid_request_error"},
		{"model not a string", "/v1/chat/completions", k.Key, `{"model":42}`, 400, "invalid_request_error"},
		{"huge body", "/v1/chat/completions", k.Key, `{"model":"test-model","x":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "request_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := post(t, tc.path, tc.key, tc.body)
			apiErr(t, resp, body, tc.status, tc.code)
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id")
			}
		})
	}
	if n := len(env.mock.Requests()); n != before {
		t.Fatalf("%d refused requests reached the upstream", n-before)
	}
	if got := getUser(t, u.ID); got.Balance != "1.000000000" || got.Held != "0.000000000" {
		t.Fatalf("refusals changed the account: %+v", got)
	}
	if recs := usageOf(t, u.ID); len(recs) != 0 {
		t.Fatalf("refusals were recorded: %+v", recs)
	}
}

// The mock reports 12 uncached prompt tokens (+X-Mock-Cached cached) and one
// completion token per delta; test-model costs 1.00 / 0.10 / 2.00 per 1M.
func TestChatJSONDebitsExactly(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	c := client(k.Key)
	var raw *http.Response
	resp, err := c.Chat.Completions.New(context.Background(), chatParams("test-model"),
		option.WithHeader("X-Mock-Cached", "100"), option.WithHeader("X-Mock-Deltas", "7"),
		option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Usage.PromptTokens != 112 || resp.Usage.CompletionTokens != 7 {
		t.Fatalf("usage passed to client: %+v", resp.Usage)
	}
	if raw.Header.Get("X-Request-Id") == "" {
		t.Fatal("no X-Request-Id")
	}
	// 12·1000 + 100·100 + 7·2000 nanos
	const want = 12_000 + 10_000 + 14_000
	recs := waitUsage(t, u.ID, 1)
	r := recs[0]
	if r.InputTokens != 112 || r.CachedInputTokens != 100 || r.OutputTokens != 7 || r.Estimated ||
		r.Outcome != "completed" || r.Status != 200 || r.Stream || r.KeyID != k.ID || r.RequestID != raw.Header.Get("X-Request-Id") {
		t.Fatalf("usage row: %+v", r)
	}
	if got := mustNanos(t, r.Cost); got != want {
		t.Fatalf("row cost %d, want %d", got, want)
	}
	after := getUser(t, u.ID)
	if moved := 1_000_000_000 - mustNanos(t, after.Balance); moved != want || after.Held != "0.000000000" {
		t.Fatalf("balance moved %d (held %s), want %d", moved, after.Held, want)
	}

	last, _ := env.mock.LastRequest()
	if got := last.Header.Get("Authorization"); got != "Bearer upstream-secret" {
		t.Fatalf("upstream saw Authorization %q", got)
	}
	if strings.Contains(string(last.Body), k.Key) || last.Header.Get("X-Api-Key") != "" {
		t.Fatal("client key reached the upstream")
	}
}

func TestChatStreamDebitsExactlyAndHidesInjectedUsage(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	c := client(k.Key)
	stream := c.Chat.Completions.NewStreaming(context.Background(), chatParams("test-model"),
		option.WithHeader("X-Mock-Deltas", "9"))
	var content strings.Builder
	chunks := 0
	for stream.Next() {
		ch := stream.Current()
		chunks++
		if len(ch.Choices) == 0 {
			t.Fatalf("client got a chunk without choices (the injected usage chunk): %s", ch.RawJSON())
		}
		content.WriteString(ch.Choices[0].Delta.Content)
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if chunks < 9 || content.Len() == 0 {
		t.Fatalf("got %d chunks, content %q", chunks, content.String())
	}
	last, _ := env.mock.LastRequest()
	if !strings.Contains(string(last.Body), `"include_usage":true`) {
		t.Fatalf("upstream was not asked for usage: %s", last.Body)
	}
	const want = 12_000 + 9*2_000
	r := waitUsage(t, u.ID, 1)[0]
	if !r.Stream || r.OutputTokens != 9 || r.InputTokens != 12 || r.Estimated || r.Outcome != "completed" {
		t.Fatalf("usage row: %+v", r)
	}
	if got := mustNanos(t, r.Cost); got != want {
		t.Fatalf("row cost %d, want %d", got, want)
	}
	if moved := 1_000_000_000 - mustNanos(t, getUser(t, u.ID).Balance); moved != want {
		t.Fatalf("balance moved %d, want %d", moved, want)
	}
}

func TestStreamClientAskingForUsageSeesIt(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	c := client(k.Key)
	p := chatParams("test-model")
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Chat.Completions.NewStreaming(context.Background(), p, option.WithHeader("X-Mock-Deltas", "3"))
	var usage int64
	for stream.Next() {
		if ch := stream.Current(); len(ch.Choices) == 0 {
			usage = ch.Usage.CompletionTokens
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if usage != 3 {
		t.Fatalf("client asked for usage and got completion_tokens=%d", usage)
	}
	waitUsage(t, u.ID, 1)
}

func TestFirstDeltaIsNotBuffered(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	req, _ := http.NewRequest("POST", gatewayURL+"/v1/chat/completions",
		strings.NewReader(`{"model":"test-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+k.Key)
	req.Header.Set("X-Mock-Hold", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The mock sends one delta and then holds the stream open until
	// released: reading it proves the gateway forwarded it at once.
	readHeldStream(t, resp.Body)
	waitUsage(t, u.ID, 1)
}

// readHeldStream reads a stream the mock holds after its first delta
// (X-Mock-Hold): the first delta must arrive while the upstream is still
// holding, then the stream is released and read to [DONE]. It returns what
// followed the first delta.
func readHeldStream(t *testing.T, body io.Reader) string {
	t.Helper()
	br := bufio.NewReader(body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before the first delta: %v", err)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, "Hello") {
			break
		}
	}
	env.mock.Release()
	rest, err := readAll(br)
	if err != nil || !strings.Contains(rest, "data: [DONE]") {
		t.Fatalf("rest of stream %q, %v", rest, err)
	}
	return rest
}

func readAll(br *bufio.Reader) (string, error) {
	var sb strings.Builder
	_, err := br.WriteTo(&sb)
	if errors.Is(err, http.ErrBodyReadAfterClose) {
		err = nil
	}
	return sb.String(), err
}

func TestUpstreamErrorPassesThroughUnbilled(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	resp, body := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model"}`, "X-Mock-Status", "500")
	if resp.StatusCode != 500 || !strings.Contains(string(body), "error") {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	r := waitUsage(t, u.ID, 1)[0]
	if r.Cost != "0.000000000" || r.Outcome != "upstream_error" || r.Status != 500 {
		t.Fatalf("usage row: %+v", r)
	}
	if got := getUser(t, u.ID); got.Balance != "1.000000000" || got.Held != "0.000000000" {
		t.Fatalf("account after upstream error: %+v", got)
	}
}

// A client cannot send its credentials, or pick another organization or
// project of the operator's upstream account, through the gateway: every
// such header is gone before the upstream, however it is spelled on the
// wire (the gateway looks headers up by their canonical names).
func TestClientOnlyHeadersNeverReachTheUpstream(t *testing.T) {
	gateway(t)
	_, k := newAccount(t, "1.00", "")
	marker := "marker-" + k.ID
	req, _ := http.NewRequest("POST", gatewayURL+"/v1/chat/completions",
		strings.NewReader(`{"model":"test-model","messages":[{"role":"user","content":"`+marker+`"}]}`))
	// Set straight in the map: Go writes these names as they are.
	for name, v := range map[string]string{
		"authorization": "Bearer " + k.Key, "x-api-key": k.Key, "cookie": "session=s3cret",
		"proxy-authorization": "Basic cHJveHk6cHc=", "openai-organization": "org-other", "OpenAI-Project": "proj-other",
		"content-type": "application/json", "content-encoding": "identity", "upgrade": "websocket", "connection": "Upgrade",
	} {
		req.Header[name] = []string{v}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	last, _ := env.mock.LastRequest()
	if !strings.Contains(string(last.Body), marker) {
		t.Fatal("the upstream's last request is not this test's")
	}
	if got := last.Header.Get("Authorization"); got != "Bearer upstream-secret" {
		t.Errorf("upstream saw Authorization %q", got)
	}
	// Nor what would let the upstream read the request other than the
	// meter did: a coding of the body, or a switch of protocols.
	for _, name := range []string{"X-Api-Key", "Cookie", "Proxy-Authorization", "Openai-Organization", "Openai-Project",
		"Content-Encoding", "Upgrade"} {
		if v := last.Header.Values(name); len(v) > 0 {
			t.Errorf("upstream saw %s: %q", name, v)
		}
	}
	for name, v := range last.Header {
		if strings.Contains(strings.Join(v, ","), k.Key) {
			t.Errorf("the client's key reached the upstream in %s", name)
		}
	}
}
