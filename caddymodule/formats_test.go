package caddymodule_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
)

// Prices of the test config in nanos per token (the config's prices are per
// million tokens in units, so these are exact integers).
type tokenPrice struct{ in, cached, write, out int64 }

var (
	testModelPrice  = tokenPrice{in: 1_000, cached: 100, write: 1_000, out: 2_000} // no cache_write: input
	claudeTestPrice = tokenPrice{in: 3_000, cached: 300, write: 3_750, out: 15_000}
)

// rowCost prices a usage row that has no cache writes.
func (p tokenPrice) rowCost(r usageRecord) int64 {
	return (r.InputTokens-r.CachedInputTokens)*p.in + r.CachedInputTokens*p.cached + r.OutputTokens*p.out
}

// settled waits for n usage rows of u (whose balance was credit nanos before
// any request) and checks that the rows sum to exactly what the balance
// moved and that nothing is held any more. It returns the rows by request ID.
func settled(t *testing.T, u userResp, credit int64, n int) map[string]usageRecord {
	t.Helper()
	recs := waitUsage(t, u.ID, n)
	rows := make(map[string]usageRecord, n)
	var sum int64
	for _, r := range recs {
		if _, dup := rows[r.RequestID]; dup {
			t.Fatalf("two usage rows for %s", r.RequestID)
		}
		rows[r.RequestID] = r
		sum += mustNanos(t, r.Cost)
	}
	after := getUser(t, u.ID)
	if moved := credit - mustNanos(t, after.Balance); moved != sum || after.Held != "0.000000000" {
		t.Fatalf("balance moved %d (held %s), the %d rows sum to %d", moved, after.Held, n, sum)
	}
	return rows
}

// row returns the usage row of the request whose answer was raw.
func row(t *testing.T, rows map[string]usageRecord, raw *http.Response) usageRecord {
	t.Helper()
	if raw == nil {
		t.Fatal("no response")
	}
	id := raw.Header.Get("X-Request-Id")
	r, ok := rows[id]
	if !ok {
		t.Fatalf("no usage row for request %q", id)
	}
	return r
}

// exact checks a row billed from the upstream's own usage report.
func exact(t *testing.T, r usageRecord, endpoint string, stream bool, in, cached, out, reasoning, cost int64) {
	t.Helper()
	if r.Endpoint != endpoint || r.Stream != stream || r.Status != 200 || r.Outcome != "completed" || r.Estimated ||
		r.InputTokens != in || r.CachedInputTokens != cached || r.OutputTokens != out || r.ReasoningTokens != reasoning {
		t.Errorf("usage row %+v,\nwant endpoint %s stream %v status 200 completed, not estimated, input %d cached %d output %d reasoning %d",
			r, endpoint, stream, in, cached, out, reasoning)
	}
	if got := mustNanos(t, r.Cost); got != cost {
		t.Errorf("row %s (%s) cost %d nanos, want %d", r.RequestID, endpoint, got, cost)
	}
}

const credit1 = 1_000_000_000 // "1.00" in nanos

func anthropicClient(key string, opts ...aoption.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]aoption.RequestOption{
		aoption.WithBaseURL(gatewayURL + "/"),
		// The SDK's WithAPIKey sends Authorization: Bearer; an Anthropic
		// client sends the key as x-api-key, which is set by hand.
		aoption.WithHeader("X-Api-Key", key),
		aoption.WithHeaderDel("Authorization"),
		aoption.WithMaxRetries(0),
	}, opts...)...)
}

// sseData returns the data of each SSE event in a body (one data line per
// event, as the mock writes them), with the event name if any.
func sseData(body []byte) (names, data []string) {
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	name := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			names = append(names, name)
			data = append(data, strings.TrimPrefix(line, "data: "))
			name = ""
		}
	}
	return names, data
}

var mockIDs = regexp.MustCompile(`[a-z]+[-_]mock[-_][0-9]+`)

// direct replays the last request the mock received straight to the mock
// and returns its answer: what the upstream sent for the gateway's request.
// The mock's response IDs count up, so they are blanked in both bodies by
// sameAsUpstream.
func direct(t *testing.T) (*http.Response, []byte) {
	t.Helper()
	last, ok := env.mock.LastRequest()
	if !ok {
		t.Fatal("the mock saw no request")
	}
	req, _ := http.NewRequest(last.Method, env.upstream.URL+last.Path, bytes.NewReader(last.Body))
	req.Header = last.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// sameAsUpstream checks that the client got exactly the bytes the upstream
// sends for the request the gateway made (response IDs aside).
func sameAsUpstream(t *testing.T, got []byte) {
	t.Helper()
	_, want := direct(t)
	g, w := mockIDs.ReplaceAll(got, []byte("ID")), mockIDs.ReplaceAll(want, []byte("ID"))
	if !bytes.Equal(g, w) {
		t.Errorf("the client did not get the upstream's bytes unchanged:\n got %q\nwant %q", g, w)
	}
}

// Embeddings bill input only: prompt_tokens × input price.
func TestEmbeddingsDebitInputOnly(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	var raw *http.Response
	c := client(k.Key)
	resp, err := c.Embeddings.New(context.Background(), openai.EmbeddingNewParams{
		Model: "test-model",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"hello", "world"}},
	}, option.WithHeader("X-Mock-Prompt", "30"), option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Data) != 2 || resp.Usage.PromptTokens != 30 {
		t.Fatalf("client got %d embeddings, usage %+v", len(resp.Data), resp.Usage)
	}
	rows := settled(t, u, credit1, 1)
	exact(t, row(t, rows, raw), "/v1/embeddings", false, 30, 0, 0, 0, 30*1_000)
}

// Legacy completions, JSON and stream.
func TestCompletionsDebitExactly(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	c := client(k.Key)
	params := openai.CompletionNewParams{
		Model:  "test-model",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Say hi")},
	}

	var rawJSON *http.Response
	resp, err := c.Completions.New(context.Background(), params,
		option.WithHeader("X-Mock-Deltas", "6"), option.WithHeader("X-Mock-Cached", "10"), option.WithResponseInto(&rawJSON))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Usage.PromptTokens != 22 || resp.Usage.CompletionTokens != 6 || resp.Choices[0].Text == "" {
		t.Fatalf("client got %+v", resp)
	}

	var rawStream *http.Response
	stream := c.Completions.NewStreaming(context.Background(), params,
		option.WithHeader("X-Mock-Deltas", "4"), option.WithResponseInto(&rawStream))
	var text strings.Builder
	for stream.Next() {
		ch := stream.Current()
		if len(ch.Choices) == 0 {
			t.Fatalf("client got a chunk without choices (the injected usage chunk): %s", ch.RawJSON())
		}
		text.WriteString(ch.Choices[0].Text)
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != "Hello from the mock" {
		t.Fatalf("streamed text %q", text.String())
	}
	if last, _ := env.mock.LastRequest(); !strings.Contains(string(last.Body), `"include_usage":true`) {
		t.Fatalf("upstream was not asked for stream usage: %s", last.Body)
	}

	rows := settled(t, u, credit1, 2)
	exact(t, row(t, rows, rawJSON), "/v1/completions", false, 22, 10, 6, 0, 12*1_000+10*100+6*2_000)
	exact(t, row(t, rows, rawStream), "/v1/completions", true, 12, 0, 4, 0, 12*1_000+4*2_000)
}

// The Responses API reports usage in the response object, and for a stream
// in the terminal response.completed event, with cached and reasoning
// details.
func TestResponsesDebitExactly(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	c := client(k.Key)
	params := responses.ResponseNewParams{
		Model: "test-model",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Hi")},
	}

	var rawJSON *http.Response
	resp, err := c.Responses.New(context.Background(), params, option.WithHeader("X-Mock-Cached", "50"),
		option.WithHeader("X-Mock-Reasoning", "3"), option.WithHeader("X-Mock-Deltas", "4"), option.WithResponseInto(&rawJSON))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Usage.InputTokens != 62 || resp.Usage.OutputTokensDetails.ReasoningTokens != 3 || resp.OutputText() != "Hello from the mock" {
		t.Fatalf("client got usage %+v, text %q", resp.Usage, resp.OutputText())
	}

	var rawStream *http.Response
	stream := c.Responses.NewStreaming(context.Background(), params, option.WithHeader("X-Mock-Cached", "20"),
		option.WithHeader("X-Mock-Reasoning", "5"), option.WithHeader("X-Mock-Deltas", "6"), option.WithResponseInto(&rawStream))
	var text strings.Builder
	var completed *responses.Response
	for stream.Next() {
		ev := stream.Current()
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.completed":
			r := ev.Response
			completed = &r
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if completed == nil || completed.Usage.OutputTokens != 11 || text.String() != "Hello from the mock upstream." {
		t.Fatalf("client stream: text %q, completed %v", text.String(), completed)
	}

	rows := settled(t, u, credit1, 2)
	exact(t, row(t, rows, rawJSON), "/v1/responses", false, 62, 50, 7, 3, 12*1_000+50*100+7*2_000)
	exact(t, row(t, rows, rawStream), "/v1/responses", true, 32, 20, 11, 5, 12*1_000+20*100+11*2_000)
}

// Anthropic Messages: input = input_tokens + cache_creation + cache_read,
// cached = cache_read; cache writes at the cache_write price (claude-test)
// or at the input price (test-model has none); message_delta usage is
// cumulative (the mock sends three), so it is overwritten, never added.
func TestAnthropicMessagesDebitExactly(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	c := anthropicClient(k.Key)
	hdr := []aoption.RequestOption{
		aoption.WithHeader("X-Mock-Cached", "100"),
		aoption.WithHeader("X-Mock-Cache-Write", "40"),
		aoption.WithHeader("X-Mock-Deltas", "5"),
		aoption.WithHeader("X-Mock-Message-Deltas", "3"),
	}
	// 12 uncached, 40 cache writes, 100 cache reads, 5 out
	cost := func(p tokenPrice) int64 { return 12*p.in + 40*p.write + 100*p.cached + 5*p.out }
	type sent struct {
		raw    *http.Response
		stream bool
		cost   int64
	}
	var reqs []sent
	for _, tc := range []struct {
		model string
		price tokenPrice
	}{{"test-model", testModelPrice}, {"claude-test", claudeTestPrice}} {
		params := anthropic.MessageNewParams{
			Model:     anthropic.Model(tc.model),
			MaxTokens: 64,
			Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello"))},
		}
		var rawJSON *http.Response
		msg, err := c.Messages.New(context.Background(), params, append(hdr, aoption.WithResponseInto(&rawJSON))...)
		if err != nil {
			t.Fatalf("%s: %v", tc.model, err)
		}
		if msg.Usage.InputTokens != 12 || msg.Usage.CacheReadInputTokens != 100 || msg.Usage.CacheCreationInputTokens != 40 ||
			msg.Usage.OutputTokens != 5 {
			t.Fatalf("%s: client got usage %+v", tc.model, msg.Usage)
		}
		reqs = append(reqs, sent{rawJSON, false, cost(tc.price)})

		var rawStream *http.Response
		stream := c.Messages.NewStreaming(context.Background(), params, append(hdr, aoption.WithResponseInto(&rawStream))...)
		var acc anthropic.Message
		deltas := 0
		for stream.Next() {
			ev := stream.Current()
			if ev.Type == "message_delta" {
				deltas++
			}
			if err := acc.Accumulate(ev); err != nil {
				t.Fatalf("%s: accumulate: %v", tc.model, err)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("%s stream: %v", tc.model, err)
		}
		if deltas != 3 || acc.Usage.OutputTokens != 5 || acc.Usage.CacheCreationInputTokens != 40 || acc.StopReason != "end_turn" {
			t.Fatalf("%s stream: %d message_delta, accumulated %+v", tc.model, deltas, acc.Usage)
		}
		reqs = append(reqs, sent{rawStream, true, cost(tc.price)})
	}
	for _, r := range env.mock.Requests()[len(env.mock.Requests())-4:] {
		if r.Header.Get("X-Api-Key") != "" || r.Header.Get("Authorization") != "Bearer upstream-secret" {
			t.Fatalf("upstream saw x-api-key %q, authorization %q", r.Header.Get("X-Api-Key"), r.Header.Get("Authorization"))
		}
	}

	rows := settled(t, u, credit1, 4)
	for _, s := range reqs {
		exact(t, row(t, rows, s.raw), "/v1/messages", s.stream, 152, 100, 5, 0, s.cost)
	}
}

// Reasoning tokens are output tokens, and the row says how many there were.
func TestChatReasoningAndCachedTokens(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	c := client(k.Key)
	hdr := []option.RequestOption{option.WithHeader("X-Mock-Reasoning", "20"),
		option.WithHeader("X-Mock-Cached", "30"), option.WithHeader("X-Mock-Deltas", "5")}

	var rawJSON *http.Response
	resp, err := c.Chat.Completions.New(context.Background(), chatParams("test-model"), append(hdr, option.WithResponseInto(&rawJSON))...)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Usage.CompletionTokens != 25 || resp.Usage.CompletionTokensDetails.ReasoningTokens != 20 {
		t.Fatalf("client got usage %+v", resp.Usage)
	}
	var rawStream *http.Response
	stream := c.Chat.Completions.NewStreaming(context.Background(), chatParams("test-model"), append(hdr, option.WithResponseInto(&rawStream))...)
	for stream.Next() {
		if len(stream.Current().Choices) == 0 {
			t.Fatalf("client got the injected usage chunk: %s", stream.Current().RawJSON())
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}

	// 12 uncached, 30 cached, 5 content + 20 reasoning out
	const want = 12*1_000 + 30*100 + 25*2_000
	rows := settled(t, u, credit1, 2)
	exact(t, row(t, rows, rawJSON), "/v1/chat/completions", false, 42, 30, 25, 20, want)
	exact(t, row(t, rows, rawStream), "/v1/chat/completions", true, 42, 30, 25, 20, want)
}

// DeepSeek puts usage on the final content chunk (the one with
// finish_reason), asked for or not. A client that did not ask for usage
// gets that chunk as the upstream sent it, and the request is billed from
// it: in OpenAI's field names ("final") and in DeepSeek's
// prompt_cache_hit_tokens ("deepseek").
func TestUsageOnFinalContentChunk(t *testing.T) {
	for _, mode := range []string{"final", "deepseek"} {
		t.Run(mode, func(t *testing.T) {
			gateway(t)
			u, k := newAccount(t, "1.00", "")
			hdr := []string{"X-Mock-Usage", mode, "X-Mock-Cached", "7", "X-Mock-Reasoning", "3"}

			rawResp, body := post(t, "/v1/chat/completions", k.Key,
				`{"model":"test-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`, hdr...)
			if rawResp.StatusCode != 200 {
				t.Fatalf("status %d: %s", rawResp.StatusCode, body)
			}
			sameAsUpstream(t, body)
			_, data := sseData(body)
			if len(data) != 8 || data[7] != "[DONE]" || !strings.Contains(data[6], `"finish_reason":"stop"`) ||
				!strings.Contains(data[6], `"completion_tokens":8`) {
				t.Fatalf("stream without the final usage chunk: %q", data)
			}

			var rawSDK *http.Response
			sdk := client(k.Key)
			stream := sdk.Chat.Completions.NewStreaming(context.Background(), chatParams("test-model"),
				option.WithHeader("X-Mock-Usage", mode), option.WithHeader("X-Mock-Cached", "7"),
				option.WithHeader("X-Mock-Reasoning", "3"), option.WithResponseInto(&rawSDK))
			var seen int64
			for stream.Next() {
				ch := stream.Current()
				if len(ch.Choices) == 0 {
					t.Fatalf("chunk without choices: %s", ch.RawJSON())
				}
				if ch.Usage.CompletionTokens != 0 {
					seen = ch.Usage.CompletionTokens
				}
			}
			if err := stream.Err(); err != nil || seen != 8 {
				t.Fatalf("SDK client saw completion_tokens %d (%v)", seen, err)
			}

			// 12 uncached, 7 cached, 5 content + 3 reasoning out
			const want = 12*1_000 + 7*100 + 8*2_000
			rows := settled(t, u, credit1, 2)
			exact(t, row(t, rows, rawResp), "/v1/chat/completions", true, 19, 7, 8, 3, want)
			exact(t, row(t, rows, rawSDK), "/v1/chat/completions", true, 19, 7, 8, 3, want)
		})
	}
}

// With inject_stream_usage off the upstream body is passed as sent (no
// stream_options added); a stream without a usage report is billed as an
// estimate. A client that asks for usage itself is billed exactly.
func TestInjectStreamUsageOff(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	c := client(k.Key, option.WithBaseURL(gatewayURL+"/noinject/v1/"))

	var rawEst *http.Response
	stream := c.Chat.Completions.NewStreaming(context.Background(), chatParams("test-model"),
		option.WithHeader("X-Mock-Usage", "none"), option.WithHeader("X-Mock-Deltas", "8"), option.WithResponseInto(&rawEst))
	var text strings.Builder
	for stream.Next() {
		if ch := stream.Current(); len(ch.Choices) > 0 {
			text.WriteString(ch.Choices[0].Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != "Hello from the mock upstream.Hello from" {
		t.Fatalf("streamed text %q", text.String())
	}
	last, _ := env.mock.LastRequest()
	if strings.Contains(string(last.Body), "stream_options") {
		t.Fatalf("inject_stream_usage off, yet the upstream got stream_options: %s", last.Body)
	}

	p := chatParams("test-model")
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	var rawExact *http.Response
	stream = c.Chat.Completions.NewStreaming(context.Background(), p,
		option.WithHeader("X-Mock-Deltas", "3"), option.WithResponseInto(&rawExact))
	var usage int64
	for stream.Next() {
		if ch := stream.Current(); len(ch.Choices) == 0 {
			usage = ch.Usage.CompletionTokens
		}
	}
	if err := stream.Err(); err != nil || usage != 3 {
		t.Fatalf("client asked for usage and got completion_tokens=%d (%v)", usage, err)
	}

	rows := settled(t, u, credit1, 2)
	est := row(t, rows, rawEst)
	if !est.Estimated || est.Outcome != "completed" || est.Status != 200 || !est.Stream ||
		est.InputTokens <= 0 || est.OutputTokens <= 0 {
		t.Errorf("row without upstream usage: %+v, want estimated, completed, tokens > 0", est)
	}
	if got := mustNanos(t, est.Cost); got <= 0 || got != testModelPrice.rowCost(est) {
		t.Errorf("estimated row cost %d, want %d (> 0): its tokens at the model's price", got, testModelPrice.rowCost(est))
	}
	exact(t, row(t, rows, rawExact), "/v1/chat/completions", true, 12, 0, 3, 0, 12*1_000+3*2_000)
}

// One-hour cache writes cost more than the one cache-write price the
// gateway bills: the Anthropic SDK's cache_control with a 1h ttl gets a
// 400 naming cache_control and never reaches the upstream; the default
// 5m ttl goes through.
func TestOneHourCacheIsRefused(t *testing.T) {
	gateway(t)
	_, k := newAccount(t, "1.00", "")
	c := anthropicClient(k.Key, aoption.WithHeader("X-Test-Tag", "cache1h"))
	params := func(ttl anthropic.CacheControlEphemeralTTL) anthropic.MessageNewParams {
		return anthropic.MessageNewParams{
			Model:     "claude-test",
			MaxTokens: 64,
			System: []anthropic.TextBlockParam{{Text: "You are brief.",
				CacheControl: anthropic.CacheControlEphemeralParam{TTL: ttl}}},
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello"))},
		}
	}
	_, err := c.Messages.New(context.Background(), params(anthropic.CacheControlEphemeralTTLTTL1h))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || !strings.Contains(apiErr.RawJSON(), "cache_control") {
		t.Fatalf("1h ttl: %v, want a 400 naming cache_control", err)
	}
	if n := hits("cache1h"); n != 0 {
		t.Fatalf("a one-hour cache request reached the upstream %d times", n)
	}
	if _, err := c.Messages.New(context.Background(), params(anthropic.CacheControlEphemeralTTLTTL5m)); err != nil {
		t.Fatalf("5m ttl: %v", err)
	}
	if n := hits("cache1h"); n != 1 {
		t.Fatalf("the 5m request reached the upstream %d times, want 1", n)
	}
}
