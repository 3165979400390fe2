package billing

import (
	"sync"
	"testing"
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
			if err := a.ApplyCredit(ctx, "u1", 7, 20*NanosPerUnit); err != nil {
				t.Errorf("ApplyCredit: %v", err)
			}
		}()
	}
	wg.Wait()
	wantBalance(t, a, "u1", 20*NanosPerUnit, 0)

	if err := a.ApplyCredit(ctx, "u1", 8, -5*NanosPerUnit); err != nil {
		t.Fatal(err)
	}
	if err := a.ApplyCredit(ctx, "u1", 8, -5*NanosPerUnit); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "u1", 15*NanosPerUnit, 0)

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
