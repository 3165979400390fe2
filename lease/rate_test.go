package lease

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// Two nodes count one key's rpm and tpm from shares of its windows: in
// one minute they never admit more than the limits together, refuse with
// a RateLimitError once the window is spent, and need a Redis round trip
// only for a slice, not for each request.
func TestRatesShareOneWindow(t *testing.T) {
	acc, _ := newAccounts(t)
	nodes := []*Rates{NewRates(acc), NewRates(acc)}
	for attempt := 0; ; attempt++ {
		win := time.Now().UnixMilli() / 60000
		key := "k" + time.Now().Format("150405.000")
		var admitted, refused, tokens atomic.Int64
		var wg sync.WaitGroup
		for w := range 40 {
			wg.Go(func() {
				_, err := nodes[w%2].Admit(context.Background(), RateRequest{User: "u", KeyID: key,
					RPM: 30, TPM: 1000, Tokens: 30, Nodes: 2})
				var rl *billing.RateLimitError
				switch {
				case err == nil:
					admitted.Add(1)
					tokens.Add(30)
				case errors.As(err, &rl):
					refused.Add(1)
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if time.Now().UnixMilli()/60000 != win && attempt < 3 {
			continue // the minute turned during the run: its count is two windows'
		}
		// rpm 30 allows 30 and tpm 1000 at 30 a request 33; a slice left
		// unused on a node when the window is spent is lost (at most one
		// per node and limit: 3 requests, or 125 tokens ≈ 4 requests).
		if admitted.Load() > 30 || admitted.Load() < 30-2*4 || refused.Load() != 40-admitted.Load() {
			t.Fatalf("admitted %d, refused %d of 40 with rpm 30 on two nodes", admitted.Load(), refused.Load())
		}
		t.Logf("admitted %d, refused %d", admitted.Load(), refused.Load())
		return
	}
}

// A key's tokens limit counts what a request may use, and what it used
// beyond that, from the node's share.
func TestRatesTokens(t *testing.T) {
	acc, _ := newAccounts(t)
	r := NewRates(acc)
	key := "kt" + time.Now().Format("150405.000")
	q := RateRequest{User: "u", KeyID: key, TPM: 100, Tokens: 40, Nodes: 1}
	st, err := r.Admit(t.Context(), q)
	if err != nil || st.TokenLimit != 100 || st.TokensLeft != 60 {
		t.Fatalf("first: %+v, %v; want 60 tokens left", st, err)
	}
	r.Used(key, 50) // it used 90
	if _, err := r.Admit(t.Context(), q); !errors.Is(err, billing.ErrRateLimited) {
		if time.Now().Second() != 0 { // a new window would admit it
			t.Fatalf("second request past the tokens limit: %v", err)
		}
	}
}
