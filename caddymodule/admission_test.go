package caddymodule_test

// Admission: one reading of the body, holds that cover what a request can cost, the key before the body, priced extras.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
)

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

// The output limits and best_of are read once as well, in the format that
// honours them: given twice, in another letter case or as another type,
// they are a 400 naming the field, and nothing reaches the upstream.
func TestAmbiguousLimitsAreRefused(t *testing.T) {
	gateway(t)
	_, k := newAccount(t, "1.00", "")
	const chat, responses, completions = "/v1/chat/completions", "/v1/responses", "/v1/completions"
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	for _, c := range []struct{ path, body, param string }{
		{chat, `{"model":"test-model","max_completion_tokens":10,"max_completion_tokens":100000,` + msgs + `}`, "max_completion_tokens"},
		{chat, `{"model":"test-model","max_completion_tokens":10,"MAX_COMPLETION_TOKENS":100000,` + msgs + `}`, "max_completion_tokens"},
		{chat, `{"model":"test-model","max_completion_tokens":"100000",` + msgs + `}`, "max_completion_tokens"},
		{chat, `{"model":"test-model","max_completion_tokens":1e5,` + msgs + `}`, "max_completion_tokens"},
		{responses, `{"model":"test-model","max_output_tokens":10,"max_output_tokens":100000,"input":"hi"}`, "max_output_tokens"},
		{responses, `{"model":"test-model","max_output_tokens":10,"Max_Output_Tokens":100000,"input":"hi"}`, "max_output_tokens"},
		{responses, `{"model":"test-model","max_output_tokens":"100000","input":"hi"}`, "max_output_tokens"},
		{responses, `{"model":"test-model","max_output_tokens":100.0,"input":"hi"}`, "max_output_tokens"},
		{completions, `{"model":"test-model","best_of":1,"best_of":20,"prompt":"hi"}`, "best_of"},
		{completions, `{"model":"test-model","best_of":1,"BEST_OF":20,"prompt":"hi"}`, "best_of"},
		{completions, `{"model":"test-model","best_of":"20","prompt":"hi"}`, "best_of"},
		{completions, `{"model":"test-model","best_of":1.5,"prompt":"hi"}`, "best_of"},
		{chat, `{"model":"test-model","best_of":1,"Best_Of":20,` + msgs + `}`, "best_of"},
	} {
		resp, body := post(t, c.path, k.Key, c.body, "X-Test-Tag", "ambiguous-limits")
		apiErr(t, resp, body, http.StatusBadRequest, "invalid_request_error")
		if !strings.Contains(string(body), `"param":"`+c.param+`"`) {
			t.Fatalf("%s %s: error %s does not name %q", c.path, c.body, body, c.param)
		}
	}
	if n := hits("ambiguous-limits"); n != 0 {
		t.Fatalf("an ambiguous body reached the upstream %d times", n)
	}
}

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
	billedExactly(t, u, k.Key, "/v1/chat/completions",
		`{"model":"test-model","n":2,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`, 12, 200)
	if got := getUser(t, u.ID); mustNanos(t, got.Balance) < 0 {
		t.Fatalf("balance overdrawn: %s", got.Balance)
	}
}

// A completions prompt array gets n completions for each prompt: the hold
// covers them all. On a balance of 0.01 (test-model's output costs 2,000
// nanos a token), 128 prompts × max_tokens 100 gets 402 without reaching
// the upstream (one prompt's limit would have fitted), and two prompts'
// report of 200 output tokens is billed whole, not cut to one prompt's 100.
func TestHoldsCoverEveryPrompt(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "0.01", "")
	many := `{"model":"test-model","max_tokens":100,"prompt":[` + strings.Repeat(`"hi",`, 127) + `"hi"]}`
	resp, b := post(t, "/v1/completions", k.Key, many, "X-Test-Tag", "prompts128")
	if resp.StatusCode != http.StatusPaymentRequired {
		t.Fatalf("128 prompts on a 0.01 balance: %d %s, want 402", resp.StatusCode, b)
	}
	if n := hits("prompts128"); n != 0 {
		t.Fatalf("%d requests reached the upstream", n)
	}
	billedExactly(t, u, k.Key, "/v1/completions", `{"model":"test-model","max_tokens":100,"prompt":["hi","ho"]}`, 4, 200)
}

// billedExactly sends body to path with the key and an upstream report of
// input and output tokens, and checks that it is answered and that its
// usage row (u's first, on a balance of 0.01) bills that output exactly.
func billedExactly(t *testing.T, u userResp, key, path, body string, input, output int) {
	t.Helper()
	resp, b := post(t, path, key, body,
		"X-Mock-Usage-Raw", fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d}`, input, output))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %s", body, resp.StatusCode, b)
	}
	rows := settled(t, u, 10_000_000, 1)
	if r := row(t, rows, resp); r.OutputTokens != int64(output) || r.Estimated || r.Clamped {
		t.Fatalf("row %+v, want %d output tokens, exact", r, output)
	}
}

// Image parts cost tokens their bytes do not show: each is held as 4000
// input tokens. On a balance of 0.01 (10,000,000 nanos; test-model's input
// costs 1,000 nanos a token, claude-test's 3,000), a request with two image
// parts (8,000 tokens and its body) fits and one with three does not; in
// every format a text request fits and the same request with twenty image
// parts gets 402 without reaching the upstream.
func TestHoldsCoverMediaParts(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "0.01", "")
	parts := func(part string, n int) string {
		return strings.Repeat(","+part, n)
	}
	chat := func(n int) string {
		return `{"model":"test-model","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text","text":"What is in these pictures?"}` +
			parts(`{"type":"image_url","image_url":{"url":"https://example.com/p.png"}}`, n) + `]}]}`
	}
	responses := func(n int) string {
		return `{"model":"test-model","max_output_tokens":10,"input":[{"role":"user","content":[{"type":"input_text","text":"What is in these pictures?"}` +
			parts(`{"type":"input_image","image_url":"https://example.com/p.png"}`, n) + `]}]}`
	}
	messages := func(n int) string {
		return `{"model":"claude-test","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text","text":"What is in these pictures?"}` +
			parts(`{"type":"image","source":{"type":"url","url":"https://example.com/p.png"}}`, n) + `]}]}`
	}
	send := func(path, body string) (*http.Response, []byte) {
		t.Helper()
		if path == "/v1/messages" {
			return post(t, path, "", body, "X-Api-Key", k.Key, "X-Test-Tag", "media")
		}
		return post(t, path, k.Key, body, "X-Test-Tag", "media")
	}
	for _, c := range []struct {
		path, body string
	}{
		{"/v1/chat/completions", chat(3)},
		{"/v1/chat/completions", chat(20)},
		{"/v1/responses", responses(20)},
		{"/v1/messages", messages(20)},
	} {
		resp, b := send(c.path, c.body)
		apiErr(t, resp, b, http.StatusPaymentRequired, "insufficient_quota")
	}
	if n := hits("media"); n != 0 {
		t.Fatalf("%d requests over the balance reached the upstream", n)
	}
	// One at a time: an admitted request with media parts may hold all the
	// balance until it settles.
	admitted := 0
	for _, c := range []struct {
		path, body string
	}{
		{"/v1/chat/completions", chat(0)},
		{"/v1/chat/completions", chat(2)},
		{"/v1/responses", responses(0)},
		{"/v1/messages", messages(0)},
	} {
		if resp, b := send(c.path, c.body); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %.80s…: %d %s, want 200", c.path, c.body, resp.StatusCode, b)
		}
		admitted++
		waitUsage(t, u.ID, admitted)
	}
	if n := hits("media"); n != admitted {
		t.Fatalf("%d requests reached the upstream, want %d", n, admitted)
	}
	if got := getUser(t, u.ID); mustNanos(t, got.Balance) < 0 {
		t.Fatalf("balance overdrawn: %s", got.Balance)
	}
}

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

// A client that leaves mid-body (a small body read whole, a large one after
// the key check) is counted as client_closed_request, not as Redis being
// unavailable, and no "redis unavailable" line reaches the log.
func TestClientLeavingMidBodyIsNotARedisError(t *testing.T) {
	dir := t.TempDir()
	accessLog, caddyLog := filepath.Join(dir, "access.log"), filepath.Join(dir, "caddy.log")
	tc := caddytest.NewTester(t)
	restore := func() {
		startOnce.Lock()
		defer startOnce.Unlock()
		load(tc, config("50ms"))
	}
	startOnce.Lock()
	load(tc, loggedConfig(accessLog, caddyLog, env.upstream.URL, env.closedAddr))
	startOnce.Unlock()
	restored := false
	t.Cleanup(func() {
		if !restored {
			restore()
		}
	})

	_, k := newAccount(t, "1.00", "")
	before := scrape(t)
	var probes []string
	for _, c := range []struct {
		path   string
		length int
	}{{"/v1/chat/completions", 1000}, {"/pass/v1/chat/completions", 200_000}} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(gatewayURL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		p := nextProbe()
		probes = append(probes, p)
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: localhost:9080\r\nAuthorization: Bearer %s\r\nX-Log-Probe: %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"model\":\"test-model\"", c.path, k.Key, p, c.length)
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
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client_closed_request counted %v times, want 2", closed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Both requests were logged, as answered 499.
	for p, e := range accessLines(t, accessLog, probes) {
		if e["status"] != float64(499) {
			t.Fatalf("%s: access line with status %v, want 499", p, e["status"])
		}
	}
	// Stop the logged config, so its last lines are written, and read
	// every line of the default log (DEBUG and up).
	restore()
	restored = true
	lines, _, tail := readLog(t, caddyLog)
	if len(lines) == 0 {
		t.Fatal("the default log is empty")
	}
	for _, line := range append(lines, tail) {
		if strings.Contains(line, "redis unavailable") {
			t.Fatalf("a client leaving mid-body was logged as a Redis failure:\n%s", line)
		}
	}
}

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
	// A coding after identity, in a second header line or after a comma,
	// is one an upstream could apply: refused as well.
	for _, ce := range [][]string{{"identity", "deflate"}, {"identity, gzip"}, {"Identity", " br"}} {
		req, _ := http.NewRequest("POST", gatewayURL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+k.Key)
		req.Header.Set("X-Test-Tag", "encoded")
		req.Header["Content-Encoding"] = ce
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		apiErr(t, resp, b, http.StatusUnsupportedMediaType, "unsupported_content_encoding")
	}
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
