package usagelog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

func newUser(t *testing.T, s *Store) string {
	t.Helper()
	u, err := s.CreateUser(t.Context(), User{})
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

// An event is applied once: its ID and its ledger entries commit together,
// a second delivery changes nothing, and a failed one leaves no trace.
func TestStripeEventOnce(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	user := newUser(t, s)
	ev := StripeEventInfo{ID: "evt_1", Type: "checkout.session.completed", APIVersion: "2023-10-16", Created: 1}
	apply := func(tx *PaymentTx) (string, error) {
		added, err := tx.AddLedger(user, 10*money.NanosPerUnit, "topup", "test", "credit:cs_1")
		if err != nil || !added {
			t.Fatalf("AddLedger = %v, %v", added, err)
		}
		return "credited", nil
	}

	boom := errors.New("boom")
	_, _, err := s.StripeEvent(ctx, ev, func(tx *PaymentTx) (string, error) {
		if _, err := apply(tx); err != nil {
			return "", err
		}
		return "", boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failing event: %v", err)
	}
	if _, err := s.StripeEventOutcome(ctx, "evt_1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("failed event recorded: %v", err)
	}
	if bal, _ := s.LedgerBalance(ctx, user); bal != 0 {
		t.Fatalf("failed event left a ledger entry: %d", bal)
	}

	entries, dup, err := s.StripeEvent(ctx, ev, apply)
	if err != nil || dup || len(entries) != 1 || entries[0].Amount != 10*money.NanosPerUnit || entries[0].User != user {
		t.Fatalf("first delivery: %+v, dup %v, %v", entries, dup, err)
	}
	entries, dup, err = s.StripeEvent(ctx, ev, func(*PaymentTx) (string, error) {
		t.Fatal("a duplicate event ran again")
		return "", nil
	})
	if err != nil || !dup || len(entries) != 0 {
		t.Fatalf("second delivery: %+v, dup %v, %v", entries, dup, err)
	}
	if o, err := s.StripeEventOutcome(ctx, "evt_1"); err != nil || o != "credited" {
		t.Fatalf("outcome %q, %v", o, err)
	}

	// Another event with the same business key adds nothing.
	entries, _, err = s.StripeEvent(ctx, StripeEventInfo{ID: "evt_2", Type: "x"}, func(tx *PaymentTx) (string, error) {
		added, err := tx.AddLedger(user, 10*money.NanosPerUnit, "topup", "test", "credit:cs_1")
		if added {
			t.Error("same ref added twice")
		}
		return "dup", err
	})
	if err != nil || len(entries) != 0 {
		t.Fatalf("same ref: %+v, %v", entries, err)
	}
	if bal, _ := s.LedgerBalance(ctx, user); bal != 10*money.NanosPerUnit {
		t.Fatalf("balance %d", bal)
	}
	// An unknown user is an error, and rolls the event back.
	_, _, err = s.StripeEvent(ctx, StripeEventInfo{ID: "evt_3"}, func(tx *PaymentTx) (string, error) {
		_, err := tx.AddLedger("nobody", 1, "topup", "", "credit:cs_3")
		return "", err
	})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
}

// Entries made by payments wait to be applied to Redis until marked;
// AddLedgerEntry's entries and entries from before the migration count as
// applied.
func TestPendingCredits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	// A ledger at schema version 1 with an admin credit.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`,
		migrations[0],
		`INSERT INTO schema_migrations VALUES (1, 0)`,
		`INSERT INTO users (id, created_at) VALUES ('old', 0)`,
		`INSERT INTO ledger (user_id, amount, kind, created_at) VALUES ('old', 5, 'credit', 0)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if p, err := s.PendingCredits(ctx, 0); err != nil || len(p) != 0 {
		t.Fatalf("entries before the migration pending: %+v, %v", p, err)
	}
	if _, err := s.AddLedgerEntry(ctx, "old", 7, "credit", "admin", ""); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for i, ref := range []string{"a", "b", "c"} {
		entries, _, err := s.StripeEvent(ctx, StripeEventInfo{ID: "evt_" + ref}, func(tx *PaymentTx) (string, error) {
			_, err := tx.AddLedger("old", money.Nanos(i+1), "topup", "", "credit:"+ref)
			return "", err
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, entries[0].ID)
	}
	p, err := s.PendingCredits(ctx, 2)
	if err != nil || len(p) != 2 || p[0].ID != ids[0] || p[1].ID != ids[1] || p[0].Ref != "credit:a" || p[1].Amount != 2 {
		t.Fatalf("PendingCredits = %+v, %v", p, err)
	}
	if p, err := s.PendingCreditsAfter(ctx, ids[0], 0); err != nil || len(p) != 2 || p[0].ID != ids[1] {
		t.Fatalf("PendingCreditsAfter = %+v, %v", p, err)
	}
	if err := s.MarkApplied(ctx, ids[0], ids[0]); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.PendingCredits(ctx, 0); len(p) != 2 || p[0].ID != ids[1] {
		t.Fatalf("after MarkApplied: %+v", p)
	}
	if n, err := s.MarkAllApplied(ctx); err != nil || n != 2 {
		t.Fatalf("MarkAllApplied = %d, %v", n, err)
	}
	if p, _ := s.PendingCredits(ctx, 0); len(p) != 0 {
		t.Fatalf("after MarkAllApplied: %+v", p)
	}
	if bal, _ := s.LedgerBalance(ctx, "old"); bal != 5+7+1+2+3 {
		t.Fatalf("balance %d", bal)
	}
}

// An entry from AddPendingLedgerEntry waits to be applied like a payment's,
// and is refused whole on the same grounds as AddLedgerEntry's.
func TestAddPendingLedgerEntry(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	user := newUser(t, s)
	e, err := s.AddPendingLedgerEntry(ctx, user, -3, "debit", "goodwill reversal", "")
	if err != nil || e.ID == 0 || e.User != user || e.Amount != -3 || e.Ref != "" {
		t.Fatalf("AddPendingLedgerEntry = %+v, %v", e, err)
	}
	if p, err := s.PendingCredits(ctx, 0); err != nil || len(p) != 1 || p[0] != e {
		t.Fatalf("pending = %+v, %v; want %+v", p, err, e)
	}
	if _, err := s.AddPendingLedgerEntry(ctx, "nobody", 5, "credit", "", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
	if _, err := s.AddPendingLedgerEntry(ctx, user, money.MaxNanos, "credit", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddPendingLedgerEntry(ctx, user, 4, "credit", "", ""); !errors.Is(err, money.ErrAmountRange) {
		t.Fatalf("past the range: %v", err)
	}
	if err := s.MarkApplied(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.PendingCredits(ctx, 0); len(p) != 1 || p[0].ID == e.ID {
		t.Fatalf("after MarkApplied: %+v", p)
	}
}

func TestTopupRecords(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	user := newUser(t, s)
	p := &Payment{TopupID: "tu_1", User: user, AmountMinor: 2000, Currency: "usd"}
	if err := s.CreateTopup(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTopup(ctx, &Payment{TopupID: "tu_2", User: user, AmountMinor: 500, Currency: "USD"}); err != nil {
		t.Fatal(err)
	}
	if err := s.TopupOpened(ctx, "tu_1", "cs_1", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.TopupFailed(ctx, "tu_2"); err != nil {
		t.Fatal(err)
	}
	// A session belongs to one top-up.
	if err := s.TopupOpened(ctx, "tu_2", "cs_1", ""); !errors.Is(err, ErrExists) {
		t.Fatalf("session given to two top-ups: %v", err)
	}
	ps, err := s.ListPayments(ctx, user, 0)
	if err != nil || len(ps) != 2 {
		t.Fatalf("ListPayments = %+v, %v", ps, err)
	}
	got := map[string]Payment{}
	for _, p := range ps {
		got[p.TopupID] = p
	}
	if p := got["tu_1"]; p.Status != "open" || p.SessionID != "cs_1" || p.Currency != "USD" || p.AmountMinor != 2000 ||
		p.Kind != PaymentTopup || p.User != user || p.CreatedAt.IsZero() || time.Since(p.CreatedAt) > time.Minute {
		t.Fatalf("tu_1 = %+v", p)
	}
	if p := got["tu_2"]; p.Status != "error" {
		t.Fatalf("tu_2 = %+v", p)
	}
	if ps, _ := s.ListPayments(ctx, "someone-else", 0); len(ps) != 0 {
		t.Fatalf("other user's payments: %+v", ps)
	}
	if ps, _ := s.ListPayments(ctx, "", 1); len(ps) != 1 {
		t.Fatalf("limit: %+v", ps)
	}
}

// PaymentTx.AddLedger keeps a ledger balance within ±money.MaxNanos,
// writes nothing when it refuses, finds an existing ref first, and books
// entries for erased users.
func TestPaymentLedgerRange(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	u, err := s.CreateUser(ctx, User{})
	if err != nil {
		t.Fatal(err)
	}
	add := func(id string, amount money.Nanos, ref string) (bool, error) {
		var added bool
		_, _, err := s.StripeEvent(ctx, StripeEventInfo{ID: id}, func(tx *PaymentTx) (string, error) {
			var err error
			added, err = tx.AddLedger(u.ID, amount, "topup", "", ref)
			return "", err
		})
		return added, err
	}
	if ok, err := add("evt_1", money.MaxNanos-5, "credit:1"); !ok || err != nil {
		t.Fatalf("credit up to the bound: %v %v", ok, err)
	}
	for i, amount := range []money.Nanos{6, money.MaxNanos + 1, -money.MaxNanos - 1} {
		if ok, err := add(fmt.Sprint("evt_over_", i), amount, fmt.Sprint("credit:over:", i)); ok || !errors.Is(err, money.ErrAmountRange) {
			t.Errorf("credit of %s: %v %v, want ErrAmountRange", amount, ok, err)
		}
	}
	if ok, err := add("evt_again", 6, "credit:1"); ok || err != nil {
		t.Errorf("an existing ref: %v %v, want false, nil", ok, err)
	}
	if ok, err := add("evt_5", 5, "credit:5"); !ok || err != nil {
		t.Errorf("credit to the bound: %v %v", ok, err)
	}
	if bal, _ := s.LedgerBalance(ctx, u.ID); bal != money.MaxNanos {
		t.Fatalf("balance %s", bal)
	}
	if _, err := s.EraseUser(ctx, u.ID, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := add("evt_refund", -7, "refund:1"); !ok || err != nil {
		t.Errorf("refund debit of an erased user: %v %v", ok, err)
	}
}
