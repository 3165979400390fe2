package caddymodule_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// streamFormat is one metered streaming API, sent as a raw request.
type streamFormat struct {
	name, path, body string
	anthropic        bool   // the key goes in x-api-key
	end              string // the terminator: a data payload or an event name
	errStatus        int    // what the provider answers an overloaded request with
}

var streamFormats = []streamFormat{
	{name: "chat", path: "/v1/chat/completions", end: "[DONE]", errStatus: 500,
		body: `{"model":"test-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
	{name: "completions", path: "/v1/completions", end: "[DONE]", errStatus: 500,
		body: `{"model":"test-model","stream":true,"prompt":"hi"}`},
	{name: "responses", path: "/v1/responses", end: "response.completed", errStatus: 500,
		body: `{"model":"test-model","stream":true,"input":"hi"}`},
	{name: "messages", path: "/v1/messages", end: "message_stop", errStatus: 529, anthropic: true,
		body: `{"model":"test-model","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`},
}

// send posts the format's body (as JSON with stream=false when json is set).
func (f streamFormat) send(t *testing.T, key string, json bool, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	body := f.body
	if json {
		body = strings.Replace(body, `"stream":true`, `"stream":false`, 1)
	}
	if f.anthropic {
		return post(t, f.path, "", body, append([]string{"X-Api-Key", key, "Anthropic-Version", "2023-06-01"}, hdr...)...)
	}
	return post(t, f.path, key, body, hdr...)
}

// ended reports whether a stream body holds the format's terminator.
func (f streamFormat) ended(body []byte) bool {
	names, data := sseData(body)
	for i := range data {
		if data[i] == f.end || names[i] == f.end {
			return true
		}
	}
	return false
}

// estimatedRow checks a row billed by estimate: the outcome, the flag,
// output tokens counted from the deltas that passed (minOut ≤ out < maxOut,
// one token per delta give or take the estimator's rule) and a cost that is
// exactly those tokens at the model's price.
func estimatedRow(t *testing.T, r usageRecord, outcome string, minOut, maxOut int64) {
	t.Helper()
	t.Logf("%s row: input %d, output %d, cost %s, estimated %v", outcome, r.InputTokens, r.OutputTokens, r.Cost, r.Estimated)
	if r.Outcome != outcome || !r.Estimated || !r.Stream || r.Status != 200 || r.InputTokens <= 0 ||
		r.OutputTokens < minOut || r.OutputTokens >= maxOut {
		t.Errorf("usage row %+v,\nwant outcome %s, estimated, stream, status 200, input > 0, %d <= output < %d",
			r, outcome, minOut, maxOut)
	}
	if got, want := mustNanos(t, r.Cost), testModelPrice.rowCost(r); got != want || got <= 0 {
		t.Errorf("row %s cost %d nanos, want %d (its tokens at the model's price, > 0)", r.Outcome, got, want)
	}
}

// Every way a response can end has its own outcome on the usage row, and
// the account moves by exactly the rows' costs:
//   - completed: billed from the upstream's usage;
//   - upstream error status: passed through unchanged (status and body),
//     costs nothing (outcome upstream_error), for a stream request and a
//     JSON one;
//   - error event mid-stream (X-Mock-Error-After): the event reaches the
//     client, outcome stream_error, billed by estimate (no usage came);
//   - upstream cut off (X-Mock-Cut): outcome upstream_cut, estimate with the
//     output that passed.
func TestStreamEndings(t *testing.T) {
	for _, f := range streamFormats {
		t.Run(f.name, func(t *testing.T) {
			gateway(t)
			u, k := newAccount(t, "1.00", "")
			status := func(resp *http.Response, body []byte, want int) {
				t.Helper()
				if resp.StatusCode != want {
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, want, body)
				}
			}

			// completed
			doneResp, body := f.send(t, k.Key, false, "X-Mock-Deltas", "20")
			status(doneResp, body, 200)
			if !f.ended(body) {
				t.Fatalf("completed stream without %s: %s", f.end, body)
			}
			if f.name == "responses" || f.name == "messages" {
				sameAsUpstream(t, body) // nothing to hide in these formats
			}

			// error event mid-stream
			errEvResp, body := f.send(t, k.Key, false, "X-Mock-Deltas", "20", "X-Mock-Error-After", "8")
			status(errEvResp, body, 200)
			if f.ended(body) || !strings.Contains(string(body), "error") {
				t.Fatalf("stream with an error event: %s", body)
			}
			sameAsUpstream(t, body)

			// upstream cut off
			cutResp, body := f.send(t, k.Key, false, "X-Mock-Deltas", "20", "X-Mock-Cut", "8")
			status(cutResp, body, 200)
			if f.ended(body) {
				t.Fatalf("a cut stream reached the client with its terminator: %s", body)
			}

			// upstream error status, for a stream request and a JSON one
			code := strconv.Itoa(f.errStatus)
			var errResps []*http.Response
			for _, asJSON := range []bool{false, true} {
				resp, body := f.send(t, k.Key, asJSON, "X-Mock-Status", code)
				status(resp, body, f.errStatus)
				upstream, want := direct(t)
				if !bytes.Equal(body, want) || upstream.StatusCode != f.errStatus {
					t.Fatalf("upstream error changed on the way: got %q, upstream sent %d %q", body, upstream.StatusCode, want)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Fatalf("upstream error content type %q", ct)
				}
				errResps = append(errResps, resp)
			}

			rows := settled(t, u, credit1, 5)
			exact(t, row(t, rows, doneResp), f.path, true, 12, 0, 20, 0, 12*1_000+20*2_000)
			estimatedRow(t, row(t, rows, errEvResp), "stream_error", 6, 20)
			estimatedRow(t, row(t, rows, cutResp), "upstream_cut", 6, 20)
			for _, resp := range errResps {
				r := row(t, rows, resp)
				if r.Outcome != "upstream_error" || r.Status != f.errStatus || r.Cost != "0.000000000" {
					t.Errorf("upstream error row %+v, want upstream_error, status %d, cost 0", r, f.errStatus)
				}
			}
		})
	}
}

// gunzip decodes a gzip body.
func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not gzip: %v: %q", err, b)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gzip body: %v", err)
	}
	return out
}

// An upstream that compresses its answer although the gateway asked for
// identity: the client gets the bytes as sent (Content-Encoding kept, so it
// can decode them) and the row has the real usage.
func TestCompressedUpstream(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	const chat = `{"model":"test-model","messages":[{"role":"user","content":"hi"}]`

	// check sends one request that the mock answers in gzip, and checks
	// that the client got the upstream's answer, compressed.
	check := func(body string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		resp, got := post(t, "/v1/chat/completions", k.Key, body,
			append([]string{"Accept-Encoding", "gzip", "X-Mock-Gzip", "1"}, hdr...)...)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %q", resp.StatusCode, got)
		}
		last, _ := env.mock.LastRequest()
		if ae := last.Header.Get("Accept-Encoding"); ae != "identity" {
			t.Errorf("the gateway asked the upstream for Accept-Encoding %q, want identity", ae)
		}
		if ce := resp.Header.Get("Content-Encoding"); ce != "gzip" {
			t.Fatalf("Content-Encoding %q, want the upstream's gzip (forwarded as sent)", ce)
		}
		plain := gunzip(t, got)
		upstream, want := direct(t)
		if upstream.Header.Get("Content-Encoding") == "gzip" {
			want = gunzip(t, want)
		}
		if g, w := mockIDs.ReplaceAll(plain, []byte("ID")), mockIDs.ReplaceAll(want, []byte("ID")); !bytes.Equal(g, w) {
			t.Errorf("decoded answer differs from the upstream's:\n got %q\nwant %q", g, w)
		}
		return resp, plain
	}

	jsonResp, plain := check(chat+`}`, "X-Mock-Cached", "4", "X-Mock-Deltas", "3")
	var got struct {
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(plain, &got); err != nil || got.Usage.PromptTokens != 16 {
		t.Fatalf("decoded JSON %q (%v)", plain, err)
	}

	askedResp, plain := check(chat+`,"stream":true,"stream_options":{"include_usage":true}}`, "X-Mock-Deltas", "4")
	if !bytes.Contains(plain, []byte("data: [DONE]")) || !bytes.Contains(plain, []byte(`"completion_tokens":4`)) {
		t.Fatalf("decoded stream %q", plain)
	}

	// The client did not ask for usage: whatever the gateway does about the
	// injected usage chunk, the client can decode the stream.
	unaskedResp, got2 := post(t, "/v1/chat/completions", k.Key, chat+`,"stream":true}`,
		"Accept-Encoding", "gzip", "X-Mock-Gzip", "1", "X-Mock-Deltas", "4")
	if unaskedResp.StatusCode != 200 {
		t.Fatalf("status %d", unaskedResp.StatusCode)
	}
	if unaskedResp.Header.Get("Content-Encoding") == "gzip" {
		got2 = gunzip(t, got2)
	}
	if !bytes.Contains(got2, []byte("data: [DONE]")) || !bytes.Contains(got2, []byte(`"content":" mock"`)) {
		t.Fatalf("decoded stream %q", got2)
	}

	// An SDK client (its transport asks for gzip and decodes it).
	var rawSDK *http.Response
	sdk := client(k.Key)
	resp, err := sdk.Chat.Completions.New(context.Background(), chatParams("test-model"),
		option.WithHeader("X-Mock-Gzip", "1"), option.WithResponseInto(&rawSDK))
	if err != nil || resp.Usage.CompletionTokens != 5 {
		t.Fatalf("SDK client: %v, %+v", err, resp)
	}

	rows := settled(t, u, credit1, 4)
	exact(t, row(t, rows, jsonResp), "/v1/chat/completions", false, 16, 4, 3, 0, 12*1_000+4*100+3*2_000)
	exact(t, row(t, rows, askedResp), "/v1/chat/completions", true, 12, 0, 4, 0, 12*1_000+4*2_000)
	exact(t, row(t, rows, unaskedResp), "/v1/chat/completions", true, 12, 0, 4, 0, 12*1_000+4*2_000)
	exact(t, row(t, rows, rawSDK), "/v1/chat/completions", false, 12, 0, 5, 0, 12*1_000+5*2_000)
}

// A hold that the balance cannot cover is refused with 402 whatever the
// format names its output limit; nothing reaches the upstream. The
// unmetered GET /v1/models passes with a valid key and costs nothing.
func TestHoldOverBalanceAndUnmeteredModels(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "0.01", "") // 10,000,000 nanos; 100,000 output tokens cost 200,000,000
	mark := time.Now()
	for _, tc := range []struct{ name, path, body string }{
		{"chat max_completion_tokens", "/v1/chat/completions", `{"model":"test-model","max_completion_tokens":100000,"messages":[]}`},
		{"chat max_tokens stream", "/v1/chat/completions", `{"model":"test-model","max_tokens":100000,"stream":true,"messages":[]}`},
		{"completions max_tokens", "/v1/completions", `{"model":"test-model","max_tokens":100000,"prompt":"hi"}`},
		{"responses max_output_tokens", "/v1/responses", `{"model":"test-model","max_output_tokens":100000,"input":"hi"}`},
		{"messages max_tokens", "/v1/messages", `{"model":"claude-test","max_tokens":100000,"messages":[]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var resp *http.Response
			var body []byte
			if tc.path == "/v1/messages" {
				resp, body = post(t, tc.path, "", tc.body, "X-Api-Key", k.Key)
			} else {
				resp, body = post(t, tc.path, k.Key, tc.body)
			}
			apiErr(t, resp, body, http.StatusPaymentRequired, "insufficient_quota")
		})
	}
	for _, r := range env.mock.Requests() {
		if r.Time.After(mark) {
			t.Fatalf("a refused request reached the upstream: %s %s", r.Path, r.Body)
		}
	}
	if got := getUser(t, u.ID); got.Balance != "0.010000000" || got.Held != "0.000000000" {
		t.Fatalf("refusals changed the account: %+v", got)
	}
	if recs := usageOf(t, u.ID); len(recs) != 0 {
		t.Fatalf("refusals were recorded: %+v", recs)
	}

	// A small limit fits.
	c := client(k.Key)
	p := chatParams("test-model")
	p.MaxTokens = openai.Int(10)
	var raw *http.Response
	if _, err := c.Chat.Completions.New(context.Background(), p, option.WithResponseInto(&raw)); err != nil {
		t.Fatalf("a request whose hold fits: %v", err)
	}

	// The model list is the gateway's own: the priced models, whatever the
	// balance.
	models, err := c.Models.List(context.Background())
	if err != nil {
		t.Fatalf("GET /v1/models: %v", err)
	}
	if len(models.Data) == 0 || !slices.ContainsFunc(models.Data, func(m openai.Model) bool { return m.ID == "test-model" }) {
		t.Fatalf("models: %+v", models.Data)
	}

	rows := settled(t, u, 10_000_000, 1)
	exact(t, row(t, rows, raw), "/v1/chat/completions", false, 12, 0, 5, 0, 12*1_000+5*2_000)
}
