package accounting

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// A Redis that lost its data is rebuilt from the ledger: balances (credits
// minus usage), active keys, no holds; revoked keys stay out.
func TestSeedRedisFromLedger(t *testing.T) {
	ctx := context.Background()
	store, err := usagelog.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	u, err := store.CreateUser(ctx, usagelog.User{Email: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.AddLedgerEntry(ctx, u.ID, 5_000_000_000, "credit", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := store.InsertUsage(ctx, []usagelog.Record{{RequestID: "req_1", Time: time.Now().UTC(), User: u.ID,
		KeyID: "key_a", Model: "m", Endpoint: "/v1/chat/completions", Status: 200, Outcome: "completed",
		Cost: 1_250, Currency: "USD"}}); err != nil {
		t.Fatal(err)
	}
	live, dead := billing.NewKeySecret(), billing.NewKeySecret()
	for _, k := range []usagelog.Key{
		{ID: "key_a", UserID: u.ID, Hash: billing.HashKey(live), Prefix: live[:11], Status: "active", CreatedAt: time.Now()},
		{ID: "key_b", UserID: u.ID, Hash: billing.HashKey(dead), Prefix: dead[:11], Status: "active", CreatedAt: time.Now()},
	} {
		if err := store.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.RevokeKey(ctx, "key_b", time.Now()); err != nil {
		t.Fatal(err)
	}

	srv := testredis.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	accounts := billing.NewAccounts(rdb)
	if err := New(store, accounts, nil, nil).SeedRedis(ctx); err != nil {
		t.Fatal(err)
	}
	bal, held, err := accounts.Balance(ctx, u.ID)
	if err != nil || bal != 5_000_000_000-1_250 || held != 0 {
		t.Fatalf("balance %d held %d err %v", bal, held, err)
	}
	if _, err := accounts.Authorize(ctx, billing.AuthRequest{KeyHash: billing.HashKey(live), CheckOnly: true}); err != nil {
		t.Fatalf("live key refused after seeding: %v", err)
	}
	if _, err := accounts.Authorize(ctx, billing.AuthRequest{KeyHash: billing.HashKey(dead), CheckOnly: true}); err != billing.ErrInvalidKey {
		t.Fatalf("revoked key after seeding: %v", err)
	}
	// Seeding happens once: later credits in Redis are not overwritten.
	if _, err := accounts.Credit(ctx, u.ID, 7); err != nil {
		t.Fatal(err)
	}
	if err := New(store, accounts, nil, nil).SeedRedis(ctx); err != nil {
		t.Fatal(err)
	}
	if bal, _, _ := accounts.Balance(ctx, u.ID); bal != 5_000_000_000-1_250+7 {
		t.Fatalf("second seed overwrote live state: %d", bal)
	}
}

// A ledger written before amounts were bounded (two credits of
// 9,000,000,000, which overflow SQLite's SUM) no longer stops the start:
// seeding a Redis that lost its data writes the balance clamped to the
// range, and AccountBalances (what reconcile reads) tells its exact value.
func TestSeedRedisFromOverflowedLedger(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	store, err := usagelog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, id := range []string{"whale", "small"} {
		if _, err := store.CreateUser(ctx, usagelog.User{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.AddLedgerEntry(ctx, "small", 2*money.NanosPerUnit, "credit", "", ""); err != nil {
		t.Fatal(err)
	}
	// What the old admin API let through, written as it was then.
	db, err := sql.Open("sqlite", path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := db.ExecContext(ctx, `INSERT INTO ledger (user_id, amount, kind, created_at) VALUES ('whale', ?, 'credit', 0)`,
			int64(9_000_000_000*money.NanosPerUnit)); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	srv := testredis.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	accounts := billing.NewAccounts(rdb)
	if err := New(store, accounts, nil, nil).SeedRedis(ctx); err != nil {
		t.Fatalf("seed: %v", err)
	}
	for user, want := range map[string]money.Nanos{"whale": money.MaxNanos, "small": 2 * money.NanosPerUnit} {
		if bal, _, err := accounts.Balance(ctx, user); err != nil || bal != want {
			t.Fatalf("%s: balance %s, %v; want %s", user, bal, err, want)
		}
	}
	all, err := store.AccountBalances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range all {
		if b.User == "whale" && b.Balance.Exact != "18000000000.000000000" {
			t.Fatalf("whale: %+v", b.Balance)
		}
	}
}
