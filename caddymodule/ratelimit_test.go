package caddymodule_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// windowRoom makes sure the current one-minute window has time left, so a
// test's requests fall in one window.
func windowRoom(t *testing.T) {
	t.Helper()
	if left := time.Minute - time.Duration(time.Now().UnixMilli()%60000)*time.Millisecond; left < 5*time.Second {
		time.Sleep(left + 10*time.Millisecond) // wait for a fresh window, not a timing assert
	}
}

func TestRequestsPerMinute(t *testing.T) {
	gateway(t)
	_, k := newAccount(t, "1.00", `{"user":"$USER","rpm":2}`)
	windowRoom(t)
	for i := 0; i < 2; i++ {
		resp, body := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model"}`)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
		if got := resp.Header.Get("X-Ratelimit-Limit-Requests"); got != "2" {
			t.Fatalf("limit header %q", got)
		}
		if got := resp.Header.Get("X-Ratelimit-Remaining-Requests"); got != strconv.Itoa(1-i) {
			t.Fatalf("request %d: remaining %q", i, got)
		}
		if resp.Header.Get("X-Ratelimit-Reset-Requests") == "" {
			t.Fatal("no reset header")
		}
	}
	before := len(env.mock.Requests())
	resp, body := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model"}`)
	apiErr(t, resp, body, http.StatusTooManyRequests, "rate_limit_exceeded")
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 60 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	if len(env.mock.Requests()) != before {
		t.Fatal("a rate-limited request reached the upstream")
	}
}

func TestTokensPerMinute(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", `{"user":"$USER","tpm":300}`)
	windowRoom(t)
	// Each request counts what it may use at admission: 11 input tokens
	// estimated (22 bytes of body) + 100 output (reserve_output_tokens).
	// It then uses 12 + 5 = 17, nothing beyond.
	resp, _ := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model"}`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Ratelimit-Limit-Tokens") != "300" || resp.Header.Get("X-Ratelimit-Remaining-Tokens") != "189" {
		t.Fatalf("first: %d %v", resp.StatusCode, resp.Header)
	}
	waitUsage(t, u.ID, 1)
	resp, _ = post(t, "/v1/chat/completions", k.Key, `{"model":"test-model"}`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Ratelimit-Remaining-Tokens") != "78" {
		t.Fatalf("second: %d remaining %q", resp.StatusCode, resp.Header.Get("X-Ratelimit-Remaining-Tokens"))
	}
	waitUsage(t, u.ID, 2)
	resp, body := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model"}`)
	apiErr(t, resp, body, http.StatusTooManyRequests, "rate_limit_exceeded")
	if resp.Header.Get("X-Ratelimit-Remaining-Tokens") != "0" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("headers %v", resp.Header)
	}
}

// A burst of parallel requests cannot pass a key's tpm: each is counted
// when admitted, not when it settles.
func TestTokensPerMinuteBurst(t *testing.T) {
	gateway(t)
	_, k := newAccount(t, "1.00", `{"user":"$USER","tpm":300}`)
	windowRoom(t)
	codes := make(chan int, 8)
	for range 8 {
		go func() {
			req, _ := http.NewRequest("POST", gatewayURL+"/v1/chat/completions", strings.NewReader(`{"model":"test-model"}`))
			req.Header.Set("Authorization", "Bearer "+k.Key)
			req.Header.Set("X-Mock-Usage-Raw", `{"prompt_tokens":12,"completion_tokens":100}`)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	ok := 0
	for range 8 {
		switch c := <-codes; c {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
		default:
			t.Fatalf("status %d", c)
		}
	}
	if ok != 2 {
		t.Fatalf("%d of 8 parallel requests admitted on tpm 300, want the 2 whose 111 tokens fit", ok)
	}
}
