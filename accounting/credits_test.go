package accounting

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// fixture is a ledger and a Redis, and the Books over them.
type fixture struct {
	t        *testing.T
	path     string
	store    *usagelog.Store
	rdb      *redis.Client
	accounts *billing.Accounts
	books    *Books
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	store, err := usagelog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	srv := testredis.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	accounts := billing.NewAccounts(rdb)
	return &fixture{t: t, path: path, store: store, rdb: rdb, accounts: accounts, books: New(store, accounts, nil, nil)}
}

// downBooks are Books whose Redis cannot be reached.
func (f *fixture) downBooks() *Books {
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1, DialTimeout: 100 * time.Millisecond})
	f.t.Cleanup(func() { down.Close() })
	return New(f.store, billing.NewAccounts(down), nil, nil)
}

// failMarks makes the ledger refuse to mark entries applied, as a crash
// between Redis and the mark would leave them, until the returned func
// is called.
func (f *fixture) failMarks() (restore func()) {
	f.t.Helper()
	db, err := sql.Open("sqlite", f.path+"?_busy_timeout=5000")
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TRIGGER crash_at_mark BEFORE UPDATE OF redis_applied ON ledger
		BEGIN SELECT RAISE(ABORT, 'crash at mark'); END`); err != nil {
		f.t.Fatal(err)
	}
	return func() {
		defer db.Close()
		if _, err := db.Exec(`DROP TRIGGER crash_at_mark`); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) user() string {
	f.t.Helper()
	u, err := f.store.CreateUser(f.t.Context(), usagelog.User{})
	if err != nil {
		f.t.Fatal(err)
	}
	return u.ID
}

func (f *fixture) balance(user string) money.Nanos {
	f.t.Helper()
	b, _, err := f.accounts.Balance(f.t.Context(), user)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func (f *fixture) pending() int {
	f.t.Helper()
	p, err := f.store.PendingCredits(f.t.Context(), 0)
	if err != nil {
		f.t.Fatal(err)
	}
	return len(p)
}

// An admin credit takes the payments' path: a crash (here Redis down)
// between the ledger commit and Redis, or between Redis and the mark,
// leaves the entry pending, and the repair pass applies it exactly once.
func TestCreditRepairedOnce(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	u := f.user()
	const unit = money.NanosPerUnit

	e, err := f.books.Credit(ctx, u, 10*unit, "welcome")
	if err != nil || e.Amount != 10*unit || e.User != u {
		t.Fatalf("credit: %+v, %v", e, err)
	}
	if b, p := f.balance(u), f.pending(); b != 10*unit || p != 0 {
		t.Fatalf("after a credit: balance %s, %d pending", b, p)
	}

	// Redis down: the ledger keeps the entry, pending.
	_, err = f.downBooks().Credit(ctx, u, -3*unit, "reversal")
	var re *RedisError
	if !errors.As(err, &re) {
		t.Fatalf("debit with redis down: %v, want a *RedisError", err)
	}
	if bal, _ := f.store.LedgerBalance(ctx, u); bal != 7*unit {
		t.Fatalf("ledger balance %s", bal)
	}
	if b, p := f.balance(u), f.pending(); b != 10*unit || p != 1 {
		t.Fatalf("with redis down: balance %s, %d pending", b, p)
	}
	for i := range 2 { // the restart's repair, then another pass
		if _, err := f.books.RepairCredits(ctx); err != nil {
			t.Fatal(err)
		}
		if b, p := f.balance(u), f.pending(); b != 7*unit || p != 0 {
			t.Fatalf("repair pass %d: balance %s, %d pending", i+1, b, p)
		}
	}

	// A crash after Redis, before the mark: the credit is live, and
	// answered as done; the repair only marks it.
	restore := f.failMarks()
	if _, err := f.books.Credit(ctx, u, 2*unit, ""); err != nil {
		t.Fatalf("credit with the mark failing: %v", err)
	}
	if b, p := f.balance(u), f.pending(); b != 9*unit || p != 1 {
		t.Fatalf("after the crash at the mark: balance %s, %d pending", b, p)
	}
	restore()
	for i := range 2 {
		n, err := f.books.RepairCredits(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := 1 - i; n != want {
			t.Fatalf("repair pass %d handled %d entries, want %d", i+1, n, want)
		}
		if b, p := f.balance(u), f.pending(); b != 9*unit || p != 0 {
			t.Fatalf("repair pass %d: balance %s, %d pending", i+1, b, p)
		}
	}
}

// A credit Redis refuses (the live balance would leave the range: Redis and
// the ledger disagree) is taken back from the ledger whole; so is one the
// ledger refuses, before Redis is asked.
func TestCreditRefusedLeavesNothing(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	u := f.user()
	if err := f.rdb.HSet(ctx, billing.AccountKey(u, "acct"), "balance", int64(money.MaxNanos)-1, "held", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := f.books.Credit(ctx, u, 5, "")
	if !errors.Is(err, ErrLiveRange) || !errors.Is(err, money.ErrAmountRange) {
		t.Fatalf("credit past the live range: %v", err)
	}
	if err.Error() != money.ErrAmountRange.Error()+" (the live balance in redis would leave the range; run reconcile)" {
		t.Fatalf("message: %q", err)
	}
	if bal, _ := f.store.LedgerBalance(ctx, u); bal != 0 {
		t.Fatalf("ledger kept the refused entry: %s", bal)
	}
	if p := f.pending(); p != 0 {
		t.Fatalf("%d pending after a refused credit", p)
	}
	// Redis agrees again (as after reconcile); the ledger bounds its own.
	if err := f.accounts.SetBalance(ctx, u, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.books.Credit(ctx, u, money.MaxNanos, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.books.Credit(ctx, u, 1, ""); !errors.Is(err, money.ErrAmountRange) || errors.Is(err, ErrLiveRange) {
		t.Fatalf("credit past the ledger's range: %v", err)
	}
	if b, p := f.balance(u), f.pending(); b != money.MaxNanos || p != 0 {
		t.Fatalf("after the ledger refused: balance %s, %d pending", b, p)
	}
	if _, err := f.books.Credit(ctx, "nobody", 5, ""); !errors.Is(err, usagelog.ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
}

// An entry Redis refuses (the balance would be out of range: Redis and the
// ledger disagree) is left pending and does not stop the repair of the
// entries after it.
func TestRepairSkipsRefusedEntry(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	var users []string
	for i := range 2 {
		u := f.user()
		users = append(users, u)
		if _, _, err := f.store.StripeEvent(ctx, usagelog.StripeEventInfo{ID: fmt.Sprint("evt_", i)}, func(tx *usagelog.PaymentTx) (string, error) {
			_, err := tx.AddLedger(u, 5*money.NanosPerUnit, "topup", "", fmt.Sprint("credit:", i))
			return "", err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Redis holds a balance for the first user that the ledger does not.
	if err := f.rdb.HSet(ctx, billing.AccountKey(users[0], "acct"), "balance", int64(money.MaxNanos)-1, "held", 0).Err(); err != nil {
		t.Fatal(err)
	}
	n, err := f.books.RepairCredits(ctx)
	if err != nil || n != 2 {
		t.Fatalf("repair: %d, %v", n, err)
	}
	if b := f.balance(users[1]); b != 5*money.NanosPerUnit {
		t.Fatalf("the entry after the refused one: balance %s", b)
	}
	p, err := f.store.PendingCredits(ctx, 0)
	if err != nil || len(p) != 1 || p[0].User != users[0] {
		t.Fatalf("pending after repair: %+v, %v", p, err)
	}
}
