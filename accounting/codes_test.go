package accounting

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// Minted codes carry a long random secret shown once; a redeemed code
// credits the live balance once, through the payments' path: with Redis
// down the code stays redeemed with its credit pending, and the repair
// pass applies it exactly once.
func TestRedeemCodeCreditsOnce(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	u := f.user()
	const unit = money.NanosPerUnit
	codes, err := f.books.MintCodes(ctx, Mint{Amount: 10 * unit, Count: 3, Note: "batch"})
	if err != nil || len(codes) != 3 {
		t.Fatalf("mint: %v %v", codes, err)
	}
	seen := map[string]bool{}
	for _, c := range codes {
		if !strings.HasPrefix(c.Secret, "aitc-") || len(c.Secret) != 37 || seen[c.Secret] || c.Status != usagelog.CodeUnused ||
			!strings.HasPrefix(c.ID, "code_") {
			t.Fatalf("minted %+v", c)
		}
		seen[c.Secret] = true
	}

	r, err := f.books.RedeemCode(ctx, u, "  "+codes[0].Secret+"\n")
	if err != nil || r.Code.ID != codes[0].ID || r.Entry.Amount != 10*unit {
		t.Fatalf("redeem: %+v %v", r, err)
	}
	if b, p := f.balance(u), f.pending(); b != 10*unit || p != 0 {
		t.Fatalf("after redeem: balance %s, %d pending", b, p)
	}
	if _, err := f.books.RedeemCode(ctx, u, codes[0].Secret); !errors.Is(err, usagelog.ErrCodeRedeemed) || !RedeemFailed(err) {
		t.Fatalf("second redeem: %v", err)
	}
	for _, bad := range []string{"", "aitc-", "sk-ait-whatever", codes[0].Secret[:20]} {
		if _, err := f.books.RedeemCode(ctx, u, bad); !errors.Is(err, usagelog.ErrCodeUnknown) {
			t.Errorf("%q: %v", bad, err)
		}
	}

	_, err = f.downBooks().RedeemCode(ctx, u, codes[1].Secret)
	var re *RedisError
	if !errors.As(err, &re) {
		t.Fatalf("redeem with redis down: %v", err)
	}
	if b, p := f.balance(u), f.pending(); b != 10*unit || p != 1 {
		t.Fatalf("with redis down: balance %s, %d pending", b, p)
	}
	if _, err := f.books.RedeemCode(ctx, u, codes[1].Secret); !errors.Is(err, usagelog.ErrCodeRedeemed) {
		t.Fatalf("redeem again after the redis failure: %v", err)
	}
	for i := range 2 {
		if _, err := f.books.RepairCredits(ctx); err != nil {
			t.Fatal(err)
		}
		if b, p := f.balance(u), f.pending(); b != 20*unit || p != 0 {
			t.Fatalf("repair pass %d: balance %s, %d pending", i+1, b, p)
		}
	}

	// Redis refusing the credit takes the redemption back whole.
	if err := f.accounts.SetBalance(ctx, u, money.MaxNanos-1); err != nil {
		t.Fatal(err)
	}
	if _, err := f.books.RedeemCode(ctx, u, codes[2].Secret); !errors.Is(err, ErrLiveRange) {
		t.Fatalf("redeem past the live range: %v", err)
	}
	if c, err := f.store.GetCode(ctx, codes[2].ID); err != nil || c.Status != usagelog.CodeUnused {
		t.Fatalf("code after a refused credit: %+v %v", c, err)
	}
	if bal, _ := f.store.LedgerBalance(ctx, u); bal != 20*unit {
		t.Fatalf("ledger balance %s after a refused credit", bal)
	}
}

// Twenty redeems of one code at once, by two users: one credit, and the
// two balances add up to the code's amount exactly.
func TestRedeemCodeConcurrentOnce(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	users := []string{f.user(), f.user()}
	codes, err := f.books.MintCodes(ctx, Mint{Amount: 7 * money.NanosPerUnit, Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		ok int
	)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := f.books.RedeemCode(ctx, users[i%2], codes[0].Secret)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
			} else if !errors.Is(err, usagelog.ErrCodeRedeemed) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if sum := f.balance(users[0]) + f.balance(users[1]); ok != 1 || sum != 7*money.NanosPerUnit || f.pending() != 0 {
		t.Fatalf("%d redeemed, balances add to %s", ok, sum)
	}
}

// Mints out of bounds are refused naming the field; nothing is stored.
func TestMintBounds(t *testing.T) {
	f := newFixture(t)
	past := time.Now().Add(-time.Second)
	for _, c := range []struct {
		m     Mint
		field string
	}{
		{Mint{Amount: 0, Count: 1}, "amount"},
		{Mint{Amount: -1, Count: 1}, "amount"},
		{Mint{Amount: money.MaxNanos + 1, Count: 1}, "amount"},
		{Mint{Amount: 1, Count: 0}, "count"},
		{Mint{Amount: 1, Count: usagelog.MaxCodesPerMint + 1}, "count"},
		{Mint{Amount: 1, Count: 1, ExpiresAt: &past}, "expires_at"},
		{Mint{Amount: 1, Count: 1, Note: strings.Repeat("x", MaxCodeNote+1)}, "note"},
	} {
		_, err := f.books.MintCodes(t.Context(), c.m)
		var me *MintError
		if !errors.As(err, &me) || me.Field != c.field {
			t.Errorf("%+v: %v", c.m, err)
		}
	}
	if got, err := f.store.ListCodes(t.Context(), usagelog.CodeQuery{}); err != nil || len(got) != 0 {
		t.Fatalf("refused mints stored %v %v", got, err)
	}
}

// Failed redeems are counted per door; at the limit the door is blocked
// for the rest of the window, and other doors are not.
func TestRedeemFailureRate(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	p := RedeemPolicy{Failures: 3, Window: time.Hour}
	key, other := RedeemCounterKey("u", "k1"), RedeemCounterKey("u", "k2")
	for i := range 3 {
		if blocked, _, err := RedeemBlocked(ctx, f.rdb, key, p); err != nil || blocked {
			t.Fatalf("after %d failures: blocked %v, %v", i, blocked, err)
		}
		if err := CountRedeemFailure(ctx, f.rdb, key, p); err != nil {
			t.Fatal(err)
		}
	}
	blocked, reset, err := RedeemBlocked(ctx, f.rdb, key, p)
	if err != nil || !blocked || reset <= 59*time.Minute || reset > time.Hour {
		t.Fatalf("at the limit: blocked %v, reset %v, %v", blocked, reset, err)
	}
	if blocked, _, err := RedeemBlocked(ctx, f.rdb, other, p); err != nil || blocked {
		t.Fatalf("another door: blocked %v, %v", blocked, err)
	}
}
