package billing

import (
	"errors"
	"testing"
	"time"
)

func TestRateLimitRequests(t *testing.T) {
	a, _ := newTestAccounts(t)
	ctx := t.Context()
	hash := HashKey("sk-rpm")
	if err := a.PutKey(ctx, hash, KeyRecord{ID: "key_r", User: "bob", Active: true, RPM: 2}); err != nil {
		t.Fatal(err)
	}
	credit(t, a, "bob", 1_000_000)
	if left := time.Minute - time.Duration(time.Now().UnixMilli()%60000)*time.Millisecond; left < 2*time.Second {
		time.Sleep(left) // start in a fresh window
	}
	for i, want := range []int64{1, 0} {
		g, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 1, RequestID: "r" + string(rune('a'+i))})
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if g.Limits.RequestLimit != 2 || g.Limits.RequestsLeft != want || g.Limits.Reset <= 0 || g.Limits.Reset > time.Minute {
			t.Fatalf("request %d: limits %+v", i, g.Limits)
		}
		if g.Key.RPM != 2 || g.Key.ID != "key_r" {
			t.Fatalf("key record %+v", g.Key)
		}
	}
	_, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 1, RequestID: "rc"})
	var rl *RateLimitError
	if !errors.As(err, &rl) || !errors.Is(err, ErrRateLimited) || rl.Kind != "requests" || rl.Limit != 2 || rl.Reset <= 0 {
		t.Fatalf("third request: %v", err)
	}
	wantBalance(t, a, "bob", 1_000_000, 2) // the refused request holds nothing
	// Check-only calls (unmetered paths) neither count nor get refused.
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, CheckOnly: true}); err != nil {
		t.Fatalf("check-only over the limit: %v", err)
	}
}

func TestRateLimitTokensCountedAtSettle(t *testing.T) {
	a, _ := newTestAccounts(t)
	ctx := t.Context()
	hash := HashKey("sk-tpm")
	if err := a.PutKey(ctx, hash, KeyRecord{ID: "key_t", User: "tina", Active: true, TPM: 100}); err != nil {
		t.Fatal(err)
	}
	credit(t, a, "tina", 1_000_000)
	if left := time.Minute - time.Duration(time.Now().UnixMilli()%60000)*time.Millisecond; left < 2*time.Second {
		time.Sleep(left)
	}
	g, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 10, RequestID: "t1"})
	if err != nil || g.Limits.TokensLeft != 100 {
		t.Fatalf("first: %v %+v", err, g.Limits)
	}
	if ok, err := a.Settle(ctx, g, 5, 60, []byte(`{}`), SettleLive); !ok || err != nil {
		t.Fatalf("settle: %v %v", ok, err)
	}
	g, err = a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 10, RequestID: "t2"})
	if err != nil || g.Limits.TokensLeft != 40 {
		t.Fatalf("second: %v %+v", err, g.Limits)
	}
	if _, err := a.Settle(ctx, g, 5, 60, []byte(`{}`), SettleLive); err != nil {
		t.Fatal(err)
	}
	_, err = a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 10, RequestID: "t3"})
	var rl *RateLimitError
	if !errors.As(err, &rl) || rl.Kind != "tokens" || rl.Limit != 100 {
		t.Fatalf("third: %v", err)
	}
}

// A spooled settlement replayed after its first attempt did reach Redis
// must not debit twice; one whose first attempt did not must apply once.
func TestSettleReplayIsIdempotent(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	hash := putActiveKey(t, a, "sk-replay", "key_p", "pat")
	credit(t, a, "pat", 10_000)

	// First attempt reached Redis (the client only saw a timeout).
	g, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 500, RequestID: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := a.Settle(ctx, g, 300, 0, []byte(`{"request_id":"p1"}`), SettleLive); !ok {
		t.Fatal("live settle not applied")
	}
	if ok, err := a.Settle(ctx, g, 300, 0, []byte(`{"request_id":"p1"}`), SettleReplay); ok || err != nil {
		t.Fatalf("replay of an applied settlement: applied=%v err=%v", ok, err)
	}
	wantBalance(t, a, "pat", 9_700, 0)

	// First attempt never reached Redis: the hold is still there.
	g2, _ := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 500, RequestID: "p2"})
	for i := 0; i < 2; i++ {
		if _, err := a.Settle(ctx, g2, 200, 0, []byte(`{"request_id":"p2"}`), SettleReplay); err != nil {
			t.Fatal(err)
		}
	}
	wantBalance(t, a, "pat", 9_500, 0)

	// The hold expired before the replay: still applied exactly once.
	a.HoldTTL = -time.Second
	g3, _ := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 500, RequestID: "p3"})
	a.HoldTTL = DefaultHoldTTL
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 1, RequestID: "p4"}); err != nil { // releases p3
		t.Fatal(err)
	}
	wantBalance(t, a, "pat", 9_500, 1)
	for i := 0; i < 2; i++ {
		if _, err := a.Settle(ctx, g3, 100, 0, []byte(`{"request_id":"p3"}`), SettleReplay); err != nil {
			t.Fatal(err)
		}
	}
	wantBalance(t, a, "pat", 9_400, 1)

	// Admitted without a hold while Redis was down: applied once.
	g5 := Grant{KeyID: "key_p", User: "pat", RequestID: "p5"}
	for i := 0; i < 3; i++ {
		if _, err := a.Settle(ctx, g5, 50, 0, []byte(`{"request_id":"p5"}`), SettleReplayNoHold); err != nil {
			t.Fatal(err)
		}
	}
	wantBalance(t, a, "pat", 9_350, 1)
	if n, _ := UsageBacklog(ctx, rdb); n != 4 {
		t.Fatalf("usage stream has %d records, want 4 (p1, p2, p3, p5)", n)
	}
}

// TestRateLimitTokensCountedAtAdmission: a request's tokens are counted in
// the tpm window when it is admitted, so a burst cannot pass the limit
// before any of it settles; settlement adds only what was used beyond.
func TestRateLimitTokensCountedAtAdmission(t *testing.T) {
	a, _ := newTestAccounts(t)
	ctx := t.Context()
	hash := HashKey("sk-tpm-burst")
	if err := a.PutKey(ctx, hash, KeyRecord{ID: "key_b", User: "burt", Active: true, TPM: 100}); err != nil {
		t.Fatal(err)
	}
	credit(t, a, "burt", 1_000_000)
	if left := time.Minute - time.Duration(time.Now().UnixMilli()%60000)*time.Millisecond; left < 2*time.Second {
		time.Sleep(left)
	}
	g1, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 10, RequestID: "b1", Tokens: 60})
	if err != nil || g1.TokensCounted != 60 || g1.Limits.TokensLeft != 40 {
		t.Fatalf("first: %v %+v", err, g1)
	}
	// Before b1 settles, another 60 would pass the limit.
	var rl *RateLimitError
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 10, RequestID: "b2", Tokens: 60}); !errors.As(err, &rl) || rl.Kind != "tokens" {
		t.Fatalf("burst: %v, want a tokens rate limit", err)
	}
	// 30 fit; b1 then used 70, 10 beyond what was counted.
	g3, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 10, RequestID: "b3", Tokens: 30})
	if err != nil || g3.Limits.TokensLeft != 10 {
		t.Fatalf("third: %v %+v", err, g3)
	}
	if _, err := a.Settle(ctx, g1, 5, 10, []byte(`{}`), SettleLive); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 10, RequestID: "b4", Tokens: 1}); !errors.As(err, &rl) {
		t.Fatalf("window full (100 of 100): %v", err)
	}
}
