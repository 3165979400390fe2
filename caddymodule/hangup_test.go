package caddymodule_test

// A client that hangs up pays what the provider bills the operator.

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

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
