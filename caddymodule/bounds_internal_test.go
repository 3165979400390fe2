package caddymodule

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

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
	if err := seedRedis(store, accounts, zap.NewNop()); err != nil {
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
