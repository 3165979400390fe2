package caddymodule_test

// What an upstream sends is checked: outages, long lines, lying usage reports.

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func TestUnreachableUpstreamIsA5xx(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	c := client(k.Key, option.WithBaseURL(gatewayURL+"/down/v1/"))
	ctx := context.Background()

	// First: the connection is refused (502). The upstream is then marked
	// down (max_fails 1), so next: no upstream available (503).
	_, err := c.Chat.Completions.New(ctx, chatParams("test-model"))
	var apiE *openai.Error
	if !errors.As(err, &apiE) || apiE.StatusCode != http.StatusBadGateway || apiE.Code != "upstream_unreachable" {
		t.Fatalf("refused upstream: %v, want 502 upstream_unreachable", err)
	}
	stream := c.Chat.Completions.NewStreaming(ctx, chatParams("test-model"))
	for stream.Next() {
		t.Fatal("a chunk from an unreachable upstream")
	}
	if !errors.As(stream.Err(), &apiE) || apiE.StatusCode != http.StatusServiceUnavailable || apiE.Code != "upstream_unavailable" {
		t.Fatalf("stream with no upstream available: %v, want 503 upstream_unavailable", stream.Err())
	}
	rows := waitUsage(t, u.ID, 2)
	statuses := []int{rows[0].Status, rows[1].Status}
	slices.Sort(statuses)
	if !slices.Equal(statuses, []int{502, 503}) {
		t.Fatalf("row statuses %v, want 502 and 503", statuses)
	}
	for _, r := range rows {
		if r.Outcome != "upstream_unreachable" || r.Cost != "0.000000000" {
			t.Fatalf("row %+v, want outcome upstream_unreachable and no cost", r)
		}
	}
	if got := getUser(t, u.ID); got.Balance != "1.000000000" || got.Held != "0.000000000" {
		t.Fatalf("account after an outage: %+v", got)
	}
}

// An upstream that takes the request and never answers: reverse_proxy's
// response_header_timeout ends the wait, and the client gets 504
// upstream_timeout in OpenAI's shape (JSON and stream requests alike), so an
// SDK raises and may retry. Nothing is billed; the rows say the upstream gave
// no response (outcome upstream_unreachable) and, by their status, that it
// timed out.
func TestUpstreamTimeoutIsA504(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	accepted := env.silentConns.Load()
	c := client(k.Key, option.WithBaseURL(gatewayURL+"/slow/v1/"))
	ctx := context.Background()

	_, err := c.Chat.Completions.New(ctx, chatParams("test-model"))
	var apiE *openai.Error
	if !errors.As(err, &apiE) || apiE.StatusCode != http.StatusGatewayTimeout || apiE.Code != "upstream_timeout" ||
		apiE.Type != "server_error" || apiE.Message == "" {
		t.Fatalf("silent upstream: %v, want 504 upstream_timeout", err)
	}
	stream := c.Chat.Completions.NewStreaming(ctx, chatParams("test-model"))
	for stream.Next() {
		t.Fatal("a chunk from a silent upstream")
	}
	if !errors.As(stream.Err(), &apiE) || apiE.StatusCode != http.StatusGatewayTimeout || apiE.Code != "upstream_timeout" {
		t.Fatalf("stream from a silent upstream: %v, want 504 upstream_timeout", stream.Err())
	}
	resp, b := post(t, "/slow/v1/messages", "", `{"model":"claude-test","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`,
		"X-Api-Key", k.Key)
	apiErr(t, resp, b, http.StatusGatewayTimeout, "upstream_timeout")
	// Each request reached the upstream, which accepted it: the 504 is its
	// silence, not a refused connection.
	if n := env.silentConns.Load() - accepted; n < 3 {
		t.Fatalf("the silent upstream accepted %d connections, want 3", n)
	}

	for _, r := range waitUsage(t, u.ID, 3) {
		if r.Status != http.StatusGatewayTimeout || r.Outcome != "upstream_unreachable" || r.Cost != "0.000000000" ||
			r.InputTokens != 0 || r.OutputTokens != 0 {
			t.Fatalf("row %+v, want status 504, outcome upstream_unreachable, nothing billed", r)
		}
	}
	if got := getUser(t, u.ID); got.Balance != "1.000000000" || got.Held != "0.000000000" {
		t.Fatalf("account after timeouts: %+v", got)
	}
}

func TestLongStreamLineKeepsMetering(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	resp, body := post(t, "/v1/chat/completions", k.Key,
		`{"model":"test-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		"X-Mock-Long-Delta", "3000000", "X-Mock-Usage", "final",
		"X-Mock-Usage-Raw", `{"prompt_tokens":12,"completion_tokens":400000}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), strings.Repeat("x", 3_000_000)) ||
		!strings.Contains(string(body), "data: [DONE]") {
		t.Fatalf("stream with a 3 MB line: %d, %d bytes", resp.StatusCode, len(body))
	}
	rows := settled(t, u, credit1, 1)
	// The report after the line is billed as sent: 3 MB of text bears
	// out 400,000 tokens.
	if r := row(t, rows, resp); r.Outcome != "completed" || r.Estimated || r.Clamped || r.InputTokens != 12 || r.OutputTokens != 400000 {
		t.Fatalf("row %+v, want completed, exact: 12 in, 400000 out", r)
	}
}

func TestLyingUsageReports(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "10.00", "")
	before := scrape(t)
	body := `{"model":"test-model","max_tokens":10,"messages":[{"role":"user","content":"Hello there"}]}`
	resps := map[string]*http.Response{}
	for _, raw := range []string{`{}`, `{"total_tokens":5000}`, `{"prompt_tokens":"12","completion_tokens":"5"}`,
		`{"prompt_tokens":1e30,"completion_tokens":1e30,"total_tokens":2e30}`} {
		resp, b := post(t, "/v1/chat/completions", k.Key, body, "X-Mock-Usage-Raw", raw)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", raw, resp.StatusCode, b)
		}
		resps[raw] = resp
	}
	rows := settled(t, u, 10_000_000_000, 4)
	for raw, resp := range resps {
		r := row(t, rows, resp)
		switch raw {
		case `{"prompt_tokens":1e30,"completion_tokens":1e30,"total_tokens":2e30}`:
			if !r.Clamped || r.OutputTokens != 10 || r.InputTokens > int64(len(body))+4096 || r.InputTokens <= 0 {
				t.Fatalf("%s: row %+v, want clamped: output 10, input <= body bytes + 4096", raw, r)
			}
		default:
			if !r.Estimated || r.Clamped || r.InputTokens <= 0 || r.OutputTokens <= 0 || r.OutputTokens > 10 {
				t.Fatalf("%s: row %+v, want an estimate", raw, r)
			}
		}
	}
	if got := getUser(t, u.ID); mustNanos(t, got.Balance) < 9_900_000_000 {
		t.Fatalf("balance after lying reports: %s", got.Balance)
	}
	if n := metric(scrape(t), "aitoken_usage_clamped_total", "model=test-model") - metric(before, "aitoken_usage_clamped_total", "model=test-model"); n != 1 {
		t.Fatalf("usage_clamped_total moved by %v, want 1", n)
	}
}
