package caddymodule_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/cnaitoken/caddy-aitoken/internal/freeport"
)

// The texts a client and the provider exchange in TestLogs: neither may
// reach a log.
const (
	promptMarker = "prm-8d31-persimmon-lantern"
	replyMarker  = "rsp-5c07-kumquat-harbour"
)

// redactAPIKey is the log format every log that records requests needs:
// Caddy redacts Authorization and Cookie itself, but logs X-Api-Key (the
// Anthropic-style key header) verbatim. The access and error logs record a
// copy of the request taken before any handler runs, and handlers ahead of
// aitoken (rewrite, at DEBUG) log the request before aitoken sees it, so the
// handler cannot keep the header out of those lines; only the log's format
// can. A deployment needs this block in each log that records requests.
const redactAPIKey = `format filter {
			wrap json
			request>headers>X-Api-Key replace REDACTED
		}`

// loggedConfig is the test config with logging as a deployment has it: the
// site's access log in accessLog, and the default log (errors, and Caddy's,
// its modules' and aitoken's own lines) at DEBUG in caddyLog, both with
// redactAPIKey. The upstream is the mock behind upstream; /down/v1/*
// proxies to downAddr, where nothing listens.
func loggedConfig(accessLog, caddyLog, upstream, downAddr string) string {
	cfg := strings.ReplaceAll(config("50ms"), env.upstream.URL, upstream)
	const global, site = "\tgrace_period 10s\n", "http://localhost:9080 {\n"
	if !strings.Contains(cfg, global) || strings.Count(cfg, site) != 1 {
		panic("loggedConfig: the test config's layout changed; update logs_test.go")
	}
	cfg = strings.Replace(cfg, global, global+fmt.Sprintf(`	log {
		output file %s
		level DEBUG
		%s
	}
`, caddyLog, redactAPIKey), 1)
	return strings.Replace(cfg, site, site+fmt.Sprintf(`	log {
		output file %s
		%s
	}
	route /down/v1/* {
		uri strip_prefix /down
		aitoken
		reverse_proxy %s
	}
`, accessLog, redactAPIKey, downAddr), 1)
}

// markedUpstream serves the mock with the first word of every reply
// ("Hello") replaced by replyMarker, so the reply text is unmistakable.
func markedUpstream(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		env.mock.ServeHTTP(&markWriter{ResponseWriter: w}, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

type markWriter struct {
	http.ResponseWriter
	wrote bool
}

func (m *markWriter) WriteHeader(code int) {
	if !m.wrote {
		m.wrote = true
		m.Header().Del("Content-Length") // the marker changes the length
	}
	m.ResponseWriter.WriteHeader(code)
}

func (m *markWriter) Write(p []byte) (int, error) {
	if !m.wrote {
		m.WriteHeader(http.StatusOK)
	}
	if _, err := m.ResponseWriter.Write(bytes.ReplaceAll(p, []byte("Hello"), []byte(replyMarker))); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (m *markWriter) Flush() { http.NewResponseController(m.ResponseWriter).Flush() }

// leakScanner finds, in a log line, any of the secrets, any 12-character
// piece of their secret part (after their public prefix), and any of the
// texts.
type leakScanner struct {
	needles map[string]string // needle → what it is part of
}

func newLeakScanner() *leakScanner { return &leakScanner{needles: map[string]string{}} }

// secret adds a secret whose first prefixLen bytes are a public prefix
// ("sk-ait-", "whsec_").
func (s *leakScanner) secret(name, secret string, prefixLen int) {
	s.needles[secret] = name
	part := secret[prefixLen:]
	for i := 0; i+12 <= len(part); i++ {
		s.needles[part[i:i+12]] = name + " (a 12-character piece)"
	}
}

func (s *leakScanner) text(name, text string) { s.needles[text] = name }

// scan returns what line leaks.
func (s *leakScanner) scan(line string) []string {
	var found []string
	for n, what := range s.needles {
		if strings.Contains(line, n) && !slices.Contains(found, what) {
			found = append(found, what)
		}
	}
	slices.Sort(found)
	return found
}

// logEntry is a line of the JSON log.
type logEntry map[string]any

func (e logEntry) str(k string) string { s, _ := e[k].(string); return s }

// header is the first value of a request header the entry logged (or the
// string a log filter replaced the values with).
func (e logEntry) header(name string) (string, bool) {
	req, _ := e["request"].(map[string]any)
	h, _ := req["headers"].(map[string]any)
	switch v := h[name].(type) {
	case string:
		return v, true
	case []any:
		if len(v) > 0 {
			s, _ := v[0].(string)
			return s, true
		}
	}
	return "", false
}

func (e logEntry) respHeader(name string) string {
	h, _ := e["resp_headers"].(map[string]any)
	v, _ := h[name].([]any)
	if len(v) == 0 {
		return ""
	}
	s, _ := v[0].(string)
	return s
}

// readLog returns the complete lines of the log file and the entries they
// decode to (a line that is not JSON fails the test), and what follows the
// last newline: a line being written, or, once the log is closed, nothing.
func readLog(t *testing.T, path string) (lines []string, entries []logEntry, tail string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil, ""
	}
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Split(string(b), "\n")
	lines, tail = all[:len(all)-1], all[len(all)-1]
	for _, line := range lines {
		var e logEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		entries = append(entries, e)
	}
	return lines, entries, tail
}

// probe tags a request so its access-log line can be found and waited for
// (Caddy writes that line after the response is on its way).
var probeSeq atomic.Int64

func nextProbe() string { return "probe-" + strconv.FormatInt(probeSeq.Add(1), 10) }

// accessLines waits until the access log holds a line for every probe and
// returns them by probe.
func accessLines(t *testing.T, path string, probes []string) map[string]logEntry {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, entries, _ := readLog(t, path)
		got := map[string]logEntry{}
		for _, e := range entries {
			if !strings.HasPrefix(e.str("logger"), "http.log.access") {
				continue
			}
			if p, ok := e.header("X-Log-Probe"); ok {
				got[p] = e
			}
		}
		var missing []string
		for _, p := range probes {
			if _, ok := got[p]; !ok {
				missing = append(missing, p)
			}
		}
		if len(missing) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access-log line after 15s for %v", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The scanner catches a planted secret, a piece of one and a planted text,
// and passes a clean line: TestLogs can fail.
func TestLogsScannerSelfCheck(t *testing.T) {
	s := newLeakScanner()
	key := "sk-ait-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ABCD"
	s.secret("key", key, len("sk-ait-"))
	s.text("prompt", promptMarker)
	for _, line := range []string{
		`{"msg":"x","headers":{"X-Api-Key":["` + key + `"]}}`,
		`{"msg":"x","k":"…` + key[20:32] + `…"}`,
		`{"msg":"x","body":"` + promptMarker + `"}`,
	} {
		if len(s.scan(line)) == 0 {
			t.Errorf("the scanner missed a leak in %s", line)
		}
	}
	if found := s.scan(`{"msg":"handled request","user_id":"key_123","headers":{"Authorization":["REDACTED"]}}`); len(found) != 0 {
		t.Errorf("the scanner flags a clean line: %v", found)
	}
}

// TestLogs runs the gateway with every log at DEBUG in a file and checks
// (a) the access-log line of a metered request names the user, key, model,
// tokens and cost it was billed, with the key ID (never the secret) as
// user_id, and (b) no line of any log holds a key, a Stripe secret, a
// prompt or a reply, whichever way the request went.
func TestLogs(t *testing.T) {
	dir := t.TempDir()
	accessLog, caddyLog := filepath.Join(dir, "access.log"), filepath.Join(dir, "caddy.log")
	up := markedUpstream(t)
	downAddr := fmt.Sprintf("127.0.0.1:%d", freeport.Must())
	tc := caddytest.NewTester(t)
	restore := func() {
		startOnce.Lock()
		defer startOnce.Unlock()
		load(tc, config("50ms"))
	}
	startOnce.Lock()
	load(tc, loggedConfig(accessLog, caddyLog, up.URL, downAddr))
	startOnce.Unlock()
	restored := false
	t.Cleanup(func() {
		if !restored {
			restore()
		}
	})

	scan := newLeakScanner()
	const keyPrefix = len("sk-ait-")
	scan.secret("the Stripe secret key", testStripeKey, len("sk_test_"))
	scan.secret("the Stripe webhook secret", testWebhookSecret, len("whsec_"))
	scan.text("the prompt", promptMarker)
	scan.text("the reply", replyMarker)
	scan.text("the reply", "from the mock upstream")

	// Admin key creation: its answer holds the secret.
	u, k := newAccount(t, "1.00", "")
	scan.secret("a key", k.Key, keyPrefix)
	ua, anth := newAccount(t, "1.00", "")
	scan.secret("a key", anth.Key, keyPrefix)
	_, revoked := newAccount(t, "1.00", "")
	scan.secret("a revoked key", revoked.Key, keyPrefix)
	if st := admin(t, "DELETE", "/aitoken/keys/"+revoked.ID, "", nil); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}
	_, poor := newAccount(t, "", "")
	scan.secret("a key without credit", poor.Key, keyPrefix)
	unknown := "sk-ait-" + strings.Repeat("Q7", 20)
	scan.secret("an unknown key", unknown, keyPrefix)

	var probes []string
	probe := func() string { p := nextProbe(); probes = append(probes, p); return p }
	params := openai.ChatCompletionNewParams{
		Model:    "test-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("say " + promptMarker)},
	}
	c := client(k.Key)

	// Metered, key in Authorization: Bearer: a JSON answer and a stream.
	reqID := map[string]string{} // probe → the X-Request-Id the client got
	jsonProbe := probe()
	var rawJSON *http.Response
	resp, err := c.Chat.Completions.New(context.Background(), params,
		option.WithHeader("X-Log-Probe", jsonProbe), option.WithResponseInto(&rawJSON))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.Choices[0].Message.Content, replyMarker) {
		t.Fatalf("reply %q does not carry the marker", resp.Choices[0].Message.Content)
	}
	reqID[jsonProbe] = rawJSON.Header.Get("X-Request-Id")
	streamProbe := probe()
	var rawStream *http.Response
	stream := c.Chat.Completions.NewStreaming(context.Background(), params,
		option.WithHeader("X-Log-Probe", streamProbe), option.WithResponseInto(&rawStream))
	var text strings.Builder
	for stream.Next() {
		if ch := stream.Current(); len(ch.Choices) > 0 {
			text.WriteString(ch.Choices[0].Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(text.String(), replyMarker) {
		t.Fatalf("streamed reply %q does not carry the marker", text.String())
	}
	reqID[streamProbe] = rawStream.Header.Get("X-Request-Id")

	// Metered, key in X-Api-Key: OpenAI format by hand, Anthropic format
	// through its SDK (which sends x-api-key).
	body := `{"model":"test-model","messages":[{"role":"user","content":"say ` + promptMarker + `"}]}`
	xProbe := probe()
	r, b := post(t, "/v1/chat/completions", "", body, "X-Api-Key", k.Key, "X-Log-Probe", xProbe)
	if r.StatusCode != http.StatusOK || !strings.Contains(string(b), replyMarker) {
		t.Fatalf("x-api-key chat: %d %s", r.StatusCode, b)
	}
	reqID[xProbe] = r.Header.Get("X-Request-Id")
	anthProbe := probe()
	var rawAnth *http.Response
	ac := anthropicClient(anth.Key)
	msg, err := ac.Messages.New(context.Background(), anthropic.MessageNewParams{
		Model:     "claude-test",
		MaxTokens: 64,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("say " + promptMarker))},
	}, aoption.WithHeader("X-Log-Probe", anthProbe), aoption.WithResponseInto(&rawAnth))
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.Content) == 0 || !strings.HasPrefix(msg.Content[0].Text, replyMarker) {
		t.Fatalf("anthropic reply %+v does not carry the marker", msg.Content)
	}
	reqID[anthProbe] = rawAnth.Header.Get("X-Request-Id")

	// Refused: an unknown key, a revoked key, no credit (each in both
	// headers).
	refused := map[string]int{} // probe → status
	for _, rq := range []struct {
		key, header string
		status      int
	}{
		{unknown, "Authorization", http.StatusUnauthorized},
		{unknown, "X-Api-Key", http.StatusUnauthorized},
		{revoked.Key, "Authorization", http.StatusUnauthorized},
		{revoked.Key, "X-Api-Key", http.StatusUnauthorized},
		{poor.Key, "Authorization", http.StatusPaymentRequired},
		{poor.Key, "X-Api-Key", http.StatusPaymentRequired},
	} {
		val := rq.key
		if rq.header == "Authorization" {
			val = "Bearer " + rq.key
		}
		p := probe()
		r, b := post(t, "/v1/chat/completions", "", body, rq.header, val, "X-Log-Probe", p)
		if r.StatusCode != rq.status {
			t.Fatalf("%s… in %s: %d %s, want %d", rq.key[:9], rq.header, r.StatusCode, b, rq.status)
		}
		refused[p] = rq.status
	}

	// An upstream that cannot be reached: Caddy's error log logs the request.
	for _, h := range []string{"Authorization", "X-Api-Key"} {
		val := k.Key
		if h == "Authorization" {
			val = "Bearer " + k.Key
		}
		if r, b := post(t, "/down/v1/chat/completions", "", body, h, val, "X-Log-Probe", probe()); r.StatusCode != http.StatusBadGateway {
			t.Fatalf("unreachable upstream, key in %s: %d %s", h, r.StatusCode, b)
		}
	}

	// Stripe: a signed webhook (credits), one signed with another secret,
	// and, with stripe-mock, a top-up that calls Stripe with the API key.
	ev := stripeEvent("", "checkout.session.completed", "", sessionObject(uniq("cs"), u.ID, "paid", 500, "usd"))
	for _, w := range []struct {
		secret string
		status int
	}{{testWebhookSecret, http.StatusOK}, {"whsec_not_the_one_configured", http.StatusBadRequest}} {
		sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: ev, Secret: w.secret})
		r, b := post(t, "/stripe/webhook", "", string(sp.Payload), "Stripe-Signature", sp.Header, "X-Log-Probe", probe())
		if r.StatusCode != w.status {
			t.Fatalf("webhook: %d %s, want %d", r.StatusCode, b, w.status)
		}
	}
	if stripeEnv.err == nil {
		if r, b := post(t, "/v1/account/topup", k.Key, `{"amount":"20.00"}`, "X-Log-Probe", probe()); r.StatusCode != http.StatusOK {
			t.Fatalf("top-up: %d %s", r.StatusCode, b)
		}
	} else {
		t.Logf("no stripe-mock (%v): the top-up, which sends the Stripe key, is not part of this run", stripeEnv.err)
	}

	// Prepaid codes: minted (the admin answer holds them), one redeemed,
	// one redeemed twice, and a guess; none may reach a log.
	var minted struct {
		Codes []struct {
			Code string `json:"code"`
		} `json:"codes"`
	}
	if st := admin(t, "POST", "/aitoken/codes", `{"amount":"1.00","count":2}`, &minted); st != http.StatusCreated || len(minted.Codes) != 2 {
		t.Fatalf("mint: %d", st)
	}
	guess := "aitc-" + strings.Repeat("G5", 16)
	for _, c := range append(minted.Codes, struct {
		Code string `json:"code"`
	}{guess}) {
		scan.secret("a prepaid code", c.Code, len("aitc-"))
	}
	for i, code := range []string{minted.Codes[0].Code, minted.Codes[0].Code, guess, minted.Codes[1].Code} {
		want := []int{http.StatusOK, http.StatusConflict, http.StatusBadRequest, http.StatusOK}[i]
		if r, b := post(t, "/v1/account/redeem", k.Key, `{"code":"`+code+`"}`, "X-Log-Probe", probe()); r.StatusCode != want {
			t.Fatalf("redeem %d: %d %s, want %d", i, r.StatusCode, b, want)
		}
	}

	// (a) The access-log lines of the metered requests.
	lines := accessLines(t, accessLog, probes)
	// The ledger's rows: u's three answered requests and two 502s, ua's one.
	rows := map[string]usageRecord{}
	for _, r := range append(waitUsage(t, u.ID, 5), waitUsage(t, ua.ID, 1)...) {
		rows[r.RequestID] = r
	}
	// The mock reports 12 input and 5 output tokens: test-model costs
	// 12·1.00 + 5·2.00 per 1M, claude-test 12·3.00 + 5·15.00.
	for _, m := range []struct {
		probe  string
		user   string
		key    keyResp
		model  string
		in     float64
		out    float64
		cost   string
		header string
	}{
		{jsonProbe, u.ID, k, "test-model", 12, 5, "0.000022000", "Authorization"},
		{streamProbe, u.ID, k, "test-model", 12, 5, "0.000022000", "Authorization"},
		{xProbe, u.ID, k, "test-model", 12, 5, "0.000022000", "X-Api-Key"},
		{anthProbe, ua.ID, anth, "claude-test", 12, 5, "0.000111000", "X-Api-Key"},
	} {
		e := lines[m.probe]
		if e.str("msg") != "handled request" || e["status"] != float64(200) {
			t.Errorf("%s: access line %v", m.probe, e)
		}
		if e.str("user_id") != m.key.ID || e.str("aitoken_key_id") != m.key.ID || e.str("aitoken_user") != m.user {
			t.Errorf("%s: user_id %q, aitoken_key_id %q, aitoken_user %q; want the key ID %q and user %q",
				m.probe, e.str("user_id"), e.str("aitoken_key_id"), e.str("aitoken_user"), m.key.ID, m.user)
		}
		if e.str("aitoken_model") != m.model || e["aitoken_input_tokens"] != m.in || e["aitoken_output_tokens"] != m.out ||
			e.str("aitoken_cost") != m.cost || e.str("aitoken_outcome") != "completed" {
			t.Errorf("%s: metering fields model %v in %v out %v cost %v outcome %v; want %s %v %v %s completed",
				m.probe, e["aitoken_model"], e["aitoken_input_tokens"], e["aitoken_output_tokens"], e["aitoken_cost"],
				e["aitoken_outcome"], m.model, m.in, m.out, m.cost)
		}
		id := reqID[m.probe]
		if id == "" || e.str("aitoken_request_id") != id || e.respHeader("X-Request-Id") != id {
			t.Errorf("%s: aitoken_request_id %q, logged X-Request-Id %q; the client got %q",
				m.probe, e.str("aitoken_request_id"), e.respHeader("X-Request-Id"), id)
		}
		if r, ok := rows[id]; !ok || r.Cost != m.cost || float64(r.InputTokens) != m.in || float64(r.OutputTokens) != m.out {
			t.Errorf("%s: the ledger billed %+v, not what the access log says", m.probe, r)
		}
		if v, ok := e.header(m.header); !ok || v != "REDACTED" {
			t.Errorf("%s: the access log shows %s as %q, want REDACTED", m.probe, m.header, v)
		}
	}
	for p, status := range refused {
		// user_id: nothing, or the key's ID when the key is known.
		if e := lines[p]; e["status"] != float64(status) || (e.str("user_id") != "" && !strings.HasPrefix(e.str("user_id"), "key_")) {
			t.Errorf("%s: refused request logged with status %v, user_id %q", p, e["status"], e.str("user_id"))
		}
	}

	// (b) Stop the logged config (its last lines are written), then scan
	// every line of every log.
	restore()
	restored = true
	access, _, accessTail := readLog(t, accessLog)
	other, entries, otherTail := readLog(t, caddyLog)
	if len(access) < len(probes) || len(other) == 0 {
		t.Fatalf("the access log has %d lines for %d requests, the default log %d", len(access), len(probes), len(other))
	}
	// The default log got the DEBUG lines and the gateway's errors for
	// the 502s (it answers them itself, in OpenAI's shape).
	var debug, errs int
	for _, e := range entries {
		switch {
		case e.str("level") == "debug":
			debug++
		case e.str("level") == "error" && e.str("msg") == "upstream gave no response":
			errs++
		}
	}
	if debug == 0 || errs < 2 {
		t.Fatalf("the default log has %d DEBUG lines and %d upstream error lines, want some and 2", debug, errs)
	}
	for _, line := range append(append(access, other...), accessTail, otherTail) {
		if found := scan.scan(line); len(found) > 0 {
			t.Errorf("a log line leaks %s:\n%s", strings.Join(found, ", "), line)
		}
	}
}
