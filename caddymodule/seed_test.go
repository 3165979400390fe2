package caddymodule

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
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
	if err := seedRedis(store, accounts, zap.NewNop()); err != nil {
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
	if err := seedRedis(store, accounts, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	if bal, _, _ := accounts.Balance(ctx, u.ID); bal != 5_000_000_000-1_250+7 {
		t.Fatalf("second seed overwrote live state: %d", bal)
	}
}
