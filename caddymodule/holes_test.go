package caddymodule_test

// Holes an attack on the gateway found: paths that reached the upstream
// unmetered, upstream outages answered as empty successes, early hang-ups
// that were nearly free, and bodies read before the key was checked.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// Every path under the handler that is not metered is refused before
// anything goes upstream; a metered path spelled in another case is
// metered.
func TestUnmeteredPathsAreRefused(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/images/generations"},
		{"POST", "/v1/audio/speech"},
		{"POST", "/v1/audio/transcriptions"},
		{"POST", "/v1/batches"},
		{"GET", "/v1/batches"},
		{"GET", "/v1/files"},
		{"POST", "/v1/files"},
		{"DELETE", "/v1/files/file-abc"},
		{"GET", "/v1/responses/resp_123"},
		{"DELETE", "/v1/responses/resp_123"},
		{"GET", "/v1/chat/completions"},
		{"GET", "/v1/chat/completions/chatcmpl-1"},
		{"POST", "/v1/chat/completions/chatcmpl-1"},
		{"POST", "/v1/moderations"},
		{"POST", "/v1/chat/completions/.."},
		{"POST", "/pass/v1/images/generations"},
	} {
		tag := "refused-" + c.method + c.path
		req, _ := http.NewRequest(c.method, gatewayURL+c.path, strings.NewReader(`{"model":"test-model","prompt":"a cat"}`))
		req.Header.Set("Authorization", "Bearer "+k.Key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Test-Tag", tag)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		apiErr(t, resp, body, http.StatusNotFound, "unsupported_endpoint")
		if n := hits(tag); n != 0 {
			t.Fatalf("%s %s reached the upstream %d times", c.method, c.path, n)
		}
	}
	// No key: 401 first, as everywhere.
	resp, body := post(t, "/v1/images/generations", "", `{}`)
	apiErr(t, resp, body, http.StatusUnauthorized, "missing_api_key")

	// Metered paths in any spelling Caddy's path matcher accepts are
	// metered (and billed).
	spellings := []string{"/v1/CHAT/completions", "/V1/Chat/Completions", "/v1//chat/completions", "/v1/./chat/completions/"}
	for _, p := range spellings {
		resp, body := post(t, p, k.Key, `{"model":"test-model","messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
	for _, r := range waitUsage(t, u.ID, len(spellings)) {
		if mustNanos(t, r.Cost) <= 0 || r.Estimated || r.OutputTokens != 5 {
			t.Fatalf("a metered path in another spelling was not billed exactly: %+v", r)
		}
	}
}

// GET /v1/models is answered by the gateway: the priced models this key
// may use on this route, in OpenAI's list shape; the upstream is not asked.
func TestModelsAnsweredByGateway(t *testing.T) {
	gateway(t)
	_, k := newAccount(t, "", "")
	_, limited := newAccount(t, "", `{"user":"$USER","models":["test-model","pre-x"]}`)
	ctx := context.Background()
	list := func(c openai.Client) []string {
		t.Helper()
		page, err := c.Models.List(ctx, option.WithHeader("X-Test-Tag", "models-list"))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range page.Data {
			if m.Object != "model" {
				t.Fatalf("model object %+v", m)
			}
			ids = append(ids, m.ID)
		}
		return ids
	}
	if got, want := list(client(k.Key)), []string{"claude-test", "other-model", "test-model"}; !slices.Equal(got, want) {
		t.Fatalf("models for an unlimited key: %v, want %v (wildcard prices are not listed)", got, want)
	}
	if got, want := list(client(limited.Key)), []string{"pre-x", "test-model"}; !slices.Equal(got, want) {
		t.Fatalf("models for a limited key: %v, want %v", got, want)
	}
	routeLimited := client(k.Key, option.WithBaseURL(gatewayURL+"/limited/v1/"))
	if got, want := list(routeLimited), []string{"test-model"}; !slices.Equal(got, want) {
		t.Fatalf("models on a route limited to test-model: %v, want %v", got, want)
	}
	lc := client(limited.Key)
	m, err := lc.Models.Get(ctx, "pre-x")
	if err != nil || m.ID != "pre-x" {
		t.Fatalf("get pre-x: %+v, %v", m, err)
	}
	_, err = lc.Models.Get(ctx, "other-model")
	var apiE *openai.Error
	if !errors.As(err, &apiE) || apiE.StatusCode != http.StatusNotFound || apiE.Code != "model_not_found" {
		t.Fatalf("get a model the key may not use: %v", err)
	}
	if n := hits("models-list"); n != 0 {
		t.Fatalf("the model list reached the upstream %d times", n)
	}
	req, _ := http.NewRequest("GET", gatewayURL+"/v1/models", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("models without a key: %d", resp.StatusCode)
	}
}

// A passthrough path reaches the upstream for a valid key, without the
// client's key, and is not billed.
func TestPassthroughIsAuthenticatedAndUnmetered(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	req, _ := http.NewRequest("GET", gatewayURL+"/pass/v1/files", nil)
	req.Header.Set("X-Test-Tag", "passthrough-files")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || hits("passthrough-files") != 0 {
		t.Fatalf("passthrough without a key: %d, %d upstream hits", resp.StatusCode, hits("passthrough-files"))
	}
	for _, p := range []string{"/pass/v1/files", "/pass/V1/FILES/file-abc"} {
		req, _ = http.NewRequest("GET", gatewayURL+p, nil)
		req.Header.Set("X-Test-Tag", "passthrough-files")
		req.Header.Set("x-api-key", k.Key)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		last, _ := env.mock.LastRequest()
		if last.Header.Get("X-Api-Key") != "" || last.Header.Get("Authorization") != "" {
			t.Fatal("the client's key reached the upstream")
		}
	}
	if n := hits("passthrough-files"); n != 2 {
		t.Fatalf("passthrough reached the upstream %d times, want 2", n)
	}
	// The upstream gets the very path that matched, never a spelling it
	// could read as another endpoint.
	req, _ = http.NewRequest("GET", gatewayURL+"/pass/v1/models/..%2Ffiles", nil)
	req.Header.Set("x-api-key", k.Key)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if last, _ := env.mock.LastRequest(); last.Path != "/v1/files" {
		t.Fatalf("passthrough sent %q upstream, want /v1/files", last.Path)
	}
	for _, p := range []string{"/pass/v1/files/..;/batches", "/pass/v1/files/x%5C..%5Cbatches"} {
		req, _ = http.NewRequest("GET", gatewayURL+p, nil)
		req.Header.Set("x-api-key", k.Key)
		req.Header.Set("X-Test-Tag", "passthrough-odd")
		if resp, err = http.DefaultClient.Do(req); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		apiErr(t, resp, b, http.StatusNotFound, "unsupported_endpoint")
	}
	if n := hits("passthrough-odd"); n != 0 {
		t.Fatalf("an odd passthrough path reached the upstream %d times", n)
	}
	if got := getUser(t, u.ID); got.Balance != "1.000000000" || got.Held != "0.000000000" || len(usageOf(t, u.ID)) != 0 {
		t.Fatalf("a passthrough request was billed: %+v", got)
	}
}

// An upstream that cannot be reached is a 5xx with an OpenAI error body,
// which the SDKs raise (and retry), never an empty 200; it costs nothing
// and its row says why.
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

// readDeltas reads a chat stream until n content deltas have passed.
func readDeltas(t *testing.T, br *bufio.Reader, n int) {
	t.Helper()
	for seen := 0; seen < n; {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended after %d deltas: %v", seen, err)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"content":"`) && !strings.Contains(line, `"role"`) {
			seen++
		}
	}
}

// hangUp starts a stream with the mock's headers hdr, reads n deltas and
// closes the connection; it returns the response and the body it sent.
func hangUp(t *testing.T, path, key string, n int, hdr ...string) (*http.Response, string) {
	t.Helper()
	body := `{"model":"test-model","stream":true,"max_tokens":20000,"messages":[{"role":"user","content":"` +
		strings.Repeat("tell me more ", 200) + `"}]}`
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", gatewayURL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readDeltas(t, bufio.NewReader(resp.Body), n)
	cancel()
	resp.Body.Close()
	return resp, body
}

// A client that hangs up early pays what the provider bills the operator:
// by default the upstream is read to its end and its own report billed,
// hidden reasoning included.
func TestClientGoneFinishBillsTheUpstreamReport(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	resp, _ := hangUp(t, "/v1/chat/completions", k.Key, 1,
		"X-Mock-Deltas", "50", "X-Mock-Delay", "20ms", "X-Mock-Reasoning", "10000")
	rows := settled(t, u, credit1, 1)
	r := row(t, rows, resp)
	if r.Outcome != "client_gone" || r.Estimated || r.OutputTokens != 10050 || r.ReasoningTokens != 10000 || r.InputTokens != 12 {
		t.Fatalf("row %+v,\nwant client_gone, exact: input 12, output 10050 (10000 reasoning)", r)
	}
	if cost := mustNanos(t, r.Cost); cost != testModelPrice.rowCost(r) {
		t.Fatalf("cost %d, want %d", cost, testModelPrice.rowCost(r))
	}
}

// With on_client_gone cancel the upstream is stopped at once and the bill
// is at least the whole input as estimated for the hold, plus the output
// seen.
func TestClientGoneCancelBillsTheWholeInput(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	resp, body := hangUp(t, "/cancel/v1/chat/completions", k.Key, 5,
		"X-Mock-Deltas", "400", "X-Mock-Delay", "5ms", "X-Mock-Reasoning", "10000")
	rows := settled(t, u, credit1, 1)
	r := row(t, rows, resp)
	if minIn := int64(len(body)+1) / 2; r.Outcome != "client_gone" || !r.Estimated || r.InputTokens < minIn || r.OutputTokens < 5 || r.OutputTokens >= 400 {
		t.Fatalf("row %+v,\nwant client_gone, estimated, input >= %d, 5 <= output < 400", r, minIn)
	}
}

// The key is checked before a large body is read: a stranger cannot make
// the gateway read megabytes.
func TestKeyCheckedBeforeALargeBody(t *testing.T) {
	gateway(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A route with the default max_request_body (8MiB).
	req, _ := http.NewRequestWithContext(ctx, "POST", gatewayURL+"/pass/v1/chat/completions", pr)
	req.Header.Set("Authorization", "Bearer sk-not-a-key")
	go func() {
		// The start of a body that never ends: the answer must not wait
		// for the rest. (Go's server discards up to 256 KiB of an unread
		// body before it answers; a gateway that reads the body first
		// would wait for megabytes.)
		_, _ = pw.Write([]byte(`{"model":"test-model","messages":[{"role":"user","content":"` + strings.Repeat("x", 300<<10)))
	}()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("no answer while the body was still being sent: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	apiErr(t, resp, b, http.StatusUnauthorized, "invalid_api_key")
}

// A client that disconnects in the middle of its body is counted as such,
// not as a Redis outage.
func TestClientLeavingMidBodyIsNotARedisError(t *testing.T) {
	gateway(t)
	_, k := newAccount(t, "1.00", "")
	before := scrape(t)
	for _, c := range []struct {
		path   string
		length int
	}{{"/v1/chat/completions", 1000}, {"/pass/v1/chat/completions", 200_000}} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(gatewayURL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: localhost:9080\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"model\":\"test-model\"", c.path, k.Key, c.length)
		conn.Close()
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		after := scrape(t)
		closed := metric(after, "aitoken_requests_total", "outcome=client_closed_request") -
			metric(before, "aitoken_requests_total", "outcome=client_closed_request")
		if unavailable := metric(after, "aitoken_requests_total", "outcome=service_unavailable") -
			metric(before, "aitoken_requests_total", "outcome=service_unavailable"); unavailable != 0 {
			t.Fatalf("a client leaving mid-body was counted as service_unavailable %v times", unavailable)
		}
		if closed == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client_closed_request counted %v times, want 2", closed)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The gateway and the upstream read one body one way: a billing field
// given twice, in another letter case or with the wrong JSON type is a 400
// naming it, and nothing goes upstream.
func TestAmbiguousBodiesAreRefused(t *testing.T) {
	gateway(t)
	_, k := newAccount(t, "1.00", "")
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	for _, c := range []struct{ body, param string }{
		{`{"model":"other-model","MODEL":"test-model",` + msgs + `}`, "model"},
		{`{"model":"other-model","model":"test-model",` + msgs + `}`, "model"},
		{`{"model":"test-model","mod\u0065l":"other-model",` + msgs + `}`, "model"},
		{`{"model":"test-model","stream":true,"STREAM":false,` + msgs + `}`, "stream"},
		{`{"model":"test-model","stream":"true",` + msgs + `}`, "stream"},
		{`{"model":"test-model","stream":true,"STREAM_OPTIONS":{"include_usage":false},` + msgs + `}`, "stream_options"},
		{`{"model":"test-model","max_tokens":"100000",` + msgs + `}`, "max_tokens"},
		{`{"model":"test-model","max_tokens":10,"max_toKens":100000,` + msgs + `}`, "max_tokens"},
		{`{"model":"test-model","n":"5",` + msgs + `}`, "n"},
		{`{"model":"test-model","service_tier":"priority",` + msgs + `}`, "service_tier"},
		{`{"model":"test-model","modalities":["text","audio"],` + msgs + `}`, "modalities"},
	} {
		resp, body := post(t, "/v1/chat/completions", k.Key, c.body, "X-Test-Tag", "ambiguous")
		apiErr(t, resp, body, http.StatusBadRequest, "invalid_request_error")
		if !strings.Contains(string(body), `"param":"`+c.param+`"`) {
			t.Fatalf("%s: error %s does not name %q", c.body, body, c.param)
		}
	}
	if n := hits("ambiguous"); n != 0 {
		t.Fatalf("an ambiguous body reached the upstream %d times", n)
	}
}

// The hold covers every choice: n:128 on a small balance is refused
// before it reaches the upstream, so concurrent requests cannot overdraw;
// a request that fits is billed for all the choices it produced.
func TestHoldsCoverEveryChoice(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "0.01", "")
	body := `{"model":"test-model","n":128,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`
	done := make(chan int, 30)
	for range 30 {
		go func() {
			req, _ := http.NewRequest("POST", gatewayURL+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+k.Key)
			req.Header.Set("X-Test-Tag", "n128")
			req.Header.Set("X-Mock-Usage-Raw", `{"prompt_tokens":12,"completion_tokens":12800}`)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- 0
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
	}
	for range 30 {
		if st := <-done; st != http.StatusPaymentRequired {
			t.Fatalf("n:128 on a 0.01 balance: status %d, want 402", st)
		}
	}
	if n := hits("n128"); n != 0 {
		t.Fatalf("%d requests reached the upstream", n)
	}
	// n:2 × max_tokens 100 fits: an upstream reporting 200 output tokens
	// is billed all of them, exactly.
	resp, b := post(t, "/v1/chat/completions", k.Key,
		`{"model":"test-model","n":2,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`,
		"X-Mock-Usage-Raw", `{"prompt_tokens":12,"completion_tokens":200}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("n:2: %d %s", resp.StatusCode, b)
	}
	rows := settled(t, u, 10_000_000, 1)
	if r := row(t, rows, resp); r.OutputTokens != 200 || r.Estimated || r.Clamped {
		t.Fatalf("row %+v, want 200 output tokens, exact", r)
	}
	if got := getUser(t, u.ID); mustNanos(t, got.Balance) < 0 {
		t.Fatalf("balance overdrawn: %s", got.Balance)
	}
}

// One streamed line of any length is forwarded and skipped by the meter,
// which still finds the usage after it.
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

// The upstream's usage report is trusted neither way: one without counts
// is billed from an estimate, and counts beyond what the request could
// produce are cut to the bound and flagged.
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

// Headers that pick a priced feature or another part of the operator's
// upstream account are refused or removed.
func TestPricedOrAccountHeaders(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	body := `{"model":"test-model","messages":[{"role":"user","content":"hi"}]}`
	for _, beta := range []string{"context-1m-2025-08-07", "interleaved-thinking-2025-05-14, files-api-2025-04-14",
		"extended-cache-ttl-2025-04-11", "prompt-caching-2024-07-31 context-1m-2025-08-07", "prompt-caching-2024-07-31;context-1m"} {
		resp, b := post(t, "/v1/chat/completions", k.Key, body, "Anthropic-Beta", beta, "X-Test-Tag", "beta")
		apiErr(t, resp, b, http.StatusBadRequest, "invalid_request_error")
		if !strings.Contains(string(b), `"param":"anthropic-beta"`) {
			t.Fatalf("%s: %s", beta, b)
		}
	}
	if n := hits("beta"); n != 0 {
		t.Fatalf("a priced beta reached the upstream %d times", n)
	}
	// A body the gateway could not read is not sent to an upstream that
	// could: refused, after the key check.
	resp, b := post(t, "/v1/chat/completions", k.Key, body, "Content-Encoding", "gzip", "X-Test-Tag", "encoded")
	apiErr(t, resp, b, http.StatusUnsupportedMediaType, "unsupported_content_encoding")
	resp, b = post(t, "/v1/chat/completions", "sk-not-a-key", body, "Content-Encoding", "gzip", "X-Test-Tag", "encoded")
	apiErr(t, resp, b, http.StatusUnauthorized, "invalid_api_key")
	if n := hits("encoded"); n != 0 {
		t.Fatalf("an encoded body reached the upstream %d times", n)
	}
	resp, b = post(t, "/v1/chat/completions", k.Key, body, "Anthropic-Beta", "interleaved-thinking-2025-05-14",
		"OpenAI-Organization", "org-other", "OpenAI-Project", "proj_other")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("an allowed beta: %d %s", resp.StatusCode, b)
	}
	last, _ := env.mock.LastRequest()
	if last.Header.Get("Anthropic-Beta") != "interleaved-thinking-2025-05-14" ||
		last.Header.Get("OpenAI-Organization") != "" || last.Header.Get("OpenAI-Project") != "" {
		t.Fatalf("upstream headers: %v", last.Header)
	}
	waitUsage(t, u.ID, 1)
}

// Requests without an output limit, run at once, cannot together overdraw
// a balance: each holds what it can cost, as far as the balance allows,
// so a long answer to each of 30 parallel requests is paid for.
func TestParallelUnlimitedRequestsCannotOverdraw(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	body := `{"model":"test-model","stream":true,"messages":[{"role":"user","content":"write a long story"}]}`
	type result struct {
		status int
		br     *bufio.Reader
		close  func() error
	}
	results := make(chan result, 30)
	for range 30 {
		go func() {
			req, _ := http.NewRequest("POST", gatewayURL+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+k.Key)
			req.Header.Set("X-Mock-Hold", "1")
			// Each answer is long: 30,000 output tokens (0.06 at this
			// price), within max_output_tokens (32768).
			req.Header.Set("X-Mock-Usage-Raw", `{"prompt_tokens":12,"completion_tokens":30000}`)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				results <- result{}
				return
			}
			br := bufio.NewReader(resp.Body)
			if resp.StatusCode == http.StatusOK {
				// Admitted and held open by the mock after its first delta.
				if _, err := br.ReadString('\n'); err != nil {
					results <- result{close: resp.Body.Close}
					return
				}
			}
			results <- result{resp.StatusCode, br, resp.Body.Close}
		}()
	}
	var admitted []result
	for range 30 {
		r := <-results
		switch r.status {
		case http.StatusOK:
			admitted = append(admitted, r)
		case http.StatusPaymentRequired:
			r.close()
		default:
			t.Fatalf("status %d", r.status)
		}
	}
	// Every admitted stream is open at once, holding its share.
	env.mock.Release()
	for _, r := range admitted {
		if rest, err := readAll(r.br); err != nil || !strings.Contains(rest, "[DONE]") {
			t.Fatalf("stream: %v", err)
		}
		r.close()
	}
	rows := waitUsage(t, u.ID, len(admitted))
	got := getUser(t, u.ID)
	t.Logf("%d of 30 admitted at once; balance after: %s", len(admitted), got.Balance)
	if len(admitted) == 0 || len(admitted) > 16 || mustNanos(t, got.Balance) < 0 {
		t.Fatalf("%d admitted, balance %s: want at most the 16 that fit, and no overdraft", len(admitted), got.Balance)
	}
	for _, r := range rows {
		if r.OutputTokens != 30000 || r.Estimated {
			t.Fatalf("row %+v, want the 30,000 reported output tokens billed", r)
		}
	}
}

// With on_client_gone cancel, a client that hangs up before the answer
// begins (a slow, thinking model) still pays the whole input.
func TestClientGoneBeforeTheAnswerPaysTheInput(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	body := `{"model":"test-model","max_tokens":50,"messages":[{"role":"user","content":"` + strings.Repeat("think hard ", 300) + `"}]}`
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", gatewayURL+"/cancel/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+k.Key)
	req.Header.Set("X-Mock-Wait", "30s")
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	// Hang up once the request is in flight upstream.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if last, ok := env.mock.LastRequest(); ok && strings.Contains(string(last.Body), "think hard") && last.Header.Get("X-Mock-Wait") == "30s" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the upstream")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	rows := waitUsage(t, u.ID, 1)
	r := rows[0]
	if minIn := int64(len(body)+1) / 2; r.Outcome != "client_gone" || !r.Estimated || r.InputTokens < minIn || mustNanos(t, r.Cost) <= 0 {
		t.Fatalf("row %+v, want client_gone, estimated, input >= %d", r, minIn)
	}
}

// When the gateway itself cuts an upstream still generating after its
// client left (client_gone_timeout), the bill is at least the output the
// hold covered: what the provider generated meanwhile is unknown.
func TestClientGoneTimeoutBillsTheOutputLimit(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", gatewayURL+"/shortfinish/v1/chat/completions", strings.NewReader(
		`{"model":"test-model","stream":true,"max_tokens":300,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+k.Key)
	req.Header.Set("X-Mock-Deltas", "200")
	req.Header.Set("X-Mock-Delay", "50ms") // 10s of stream, far over the 300ms
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readDeltas(t, bufio.NewReader(resp.Body), 1)
	cancel()
	resp.Body.Close()
	rows := settled(t, u, credit1, 1)
	if r := row(t, rows, resp); r.Outcome != "client_gone" || !r.Estimated || r.OutputTokens != 300 {
		t.Fatalf("row %+v, want client_gone, estimated, the 300 output tokens of max_tokens", r)
	}
}
