package billing

import (
	"errors"
	"math"
	"sync"
	"testing"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// A ledger entry is applied once however often, and however concurrently,
// it is applied; debits are entries with negative amounts.
func TestApplyCreditOnce(t *testing.T) {
	a, _ := newTestAccounts(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.ApplyCredit(ctx, "u1", 7, 20*money.NanosPerUnit); err != nil {
				t.Errorf("ApplyCredit: %v", err)
			}
		}()
	}
	wg.Wait()
	wantBalance(t, a, "u1", 20*money.NanosPerUnit, 0)

	if err := a.ApplyCredit(ctx, "u1", 8, -5*money.NanosPerUnit); err != nil {
		t.Fatal(err)
	}
	if err := a.ApplyCredit(ctx, "u1", 8, -5*money.NanosPerUnit); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "u1", 15*money.NanosPerUnit, 0)

	// Entry IDs are per ledger, markers per account: another user's entry 7
	// is its own.
	if err := a.ApplyCredit(ctx, "u2", 7, 1); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "u2", 1, 0)
	for _, c := range []struct {
		user string
		id   int64
		want bool
	}{{"u1", 7, true}, {"u1", 8, true}, {"u1", 9, false}, {"u2", 7, true}} {
		got, err := a.CreditApplied(ctx, c.user, c.id)
		if err != nil || got != c.want {
			t.Errorf("CreditApplied(%s, %d) = %v, %v; want %v", c.user, c.id, got, err, c.want)
		}
	}
}

// Two credits of 9,000,000,000 (or any credit past 2^53 - 1 nanos in the
// balance) are refused in Redis, which is left as it was: the Lua numbers
// that check balances are doubles, exact only up to 2^53.
func TestCreditRange(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	big := money.Nanos(9_000_000) * money.NanosPerUnit // 9,000,000 units: in range
	if _, err := a.Credit(ctx, "u1", big); err != nil {
		t.Fatal(err)
	}
	for _, amt := range []money.Nanos{big, money.MaxNanos - big + 1, 9_000_000_000 * money.NanosPerUnit, math.MinInt64} {
		if _, err := a.Credit(ctx, "u1", amt); !errors.Is(err, money.ErrAmountRange) {
			t.Errorf("Credit(%d) = %v, want ErrAmountRange", amt, err)
		}
	}
	wantBalance(t, a, "u1", big, 0)
	// Up to the bound exactly, and debits back down, are fine.
	if bal, err := a.Credit(ctx, "u1", money.MaxNanos-big); err != nil || bal != money.MaxNanos {
		t.Fatalf("Credit to MaxNanos = %d, %v", bal, err)
	}
	if _, err := a.Credit(ctx, "u2", -money.MaxNanos); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Credit(ctx, "u2", -1); !errors.Is(err, money.ErrAmountRange) {
		t.Errorf("debit below -MaxNanos: %v", err)
	}
	wantBalance(t, a, "u2", -money.MaxNanos, 0)

	// ApplyCredit: refused entries leave neither the balance nor the marker.
	if err := a.ApplyCredit(ctx, "u1", 1, 1); !errors.Is(err, money.ErrAmountRange) {
		t.Errorf("ApplyCredit past MaxNanos: %v", err)
	}
	if ok, _ := a.CreditApplied(ctx, "u1", 1); ok {
		t.Error("refused entry marked applied")
	}
	if err := a.ApplyCredit(ctx, "u3", 2, 9_000_000_000*money.NanosPerUnit); !errors.Is(err, money.ErrAmountRange) {
		t.Errorf("ApplyCredit of 9000000000: %v", err)
	}
	if n, _ := rdb.Exists(ctx, acctKey("u3"), appliedKey("u3")).Result(); n != 0 {
		t.Errorf("refused ApplyCredit wrote %d keys", n)
	}
	wantBalance(t, a, "u1", money.MaxNanos, 0)

	// A balance stored out of range (before the bound) may only come back.
	if err := rdb.HSet(ctx, acctKey("old"), "balance", int64(9_000_000_000*money.NanosPerUnit), "held", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Credit(ctx, "old", 1); !errors.Is(err, money.ErrAmountRange) {
		t.Errorf("credit on an out-of-range balance: %v", err)
	}
	if bal, err := a.Credit(ctx, "old", -money.NanosPerUnit); err != nil || bal != 8_999_999_999*money.NanosPerUnit {
		t.Errorf("debit on an out-of-range balance = %d, %v", bal, err)
	}
	if err := a.SetBalance(ctx, "old", money.MaxNanos+1); !errors.Is(err, money.ErrAmountRange) {
		t.Errorf("SetBalance out of range: %v", err)
	}
	// Seed clamps what it cannot store exactly.
	if err := a.Seed(ctx, map[string]money.Nanos{"seeded": math.MaxInt64}, nil); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "seeded", money.MaxNanos, 0)
}
