package caddymodule

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
	"github.com/cnaitoken/caddy-aitoken/journal"
)

// fundedKey starts a redis-server holding an account for user with credit
// nanos and an active key, and returns the server, a client, the accounts
// and the key's hash.
func fundedKey(t *testing.T, user string, credit money.Nanos) (*testredis.Server, *redis.Client, *billing.Accounts, string) {
	t.Helper()
	srv := testredis.Start(t)
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	acc := billing.NewAccounts(rdb)
	if err := acc.EnsureAccount(ctx, user); err != nil {
		t.Fatal(err)
	}
	if _, err := acc.Credit(ctx, user, credit); err != nil {
		t.Fatal(err)
	}
	hash := billing.HashKey("sk-test-" + user)
	if err := acc.PutKey(ctx, hash, billing.KeyRecord{ID: "k-" + user, User: user, Active: true}); err != nil {
		t.Fatal(err)
	}
	return srv, rdb, acc, hash
}

// TestJournalLeftoverIsSettledAtStart plays a process killed after it wrote
// a settlement ahead and before Redis took it: the next start settles it,
// once.
func TestJournalLeftoverIsSettledAtStart(t *testing.T) {
	const credit = 1_000_000_000
	srv, rdb, acc, hash := fundedKey(t, "u1", credit)
	dir := t.TempDir()
	ctx := context.Background()
	g, err := acc.Authorize(ctx, billing.AuthRequest{KeyHash: hash, Model: "m", Hold: 500_000, RequestID: "req_journal1"})
	if err != nil {
		t.Fatal(err)
	}

	// The killed process: the settlement is in its journal, never Done
	// (its lock went with it).
	spath := spoolPath(dir, "redis|"+srv.URL())
	jr, err := journal.Open(filepath.Dir(spath), journalPrefix(spath))
	if err != nil {
		t.Fatal(err)
	}
	s := spooled{Grant: settlementGrant(g), Cost: 1234, Tokens: 17,
		Record: json.RawMessage(`{"request_id":"req_journal1"}`), Mode: g.Mode()}
	if _, err := jr.Append(s.appendJSON(nil)); err != nil {
		t.Fatal(err)
	}
	// Its end released the lock; a file with a record not Done stays.
	if err := jr.Close(); err != nil {
		t.Fatal(err)
	}

	settled := func() bool {
		bal, held, err := acc.Balance(ctx, "u1")
		if err != nil {
			t.Fatal(err)
		}
		if bal < credit-1234 {
			t.Fatalf("balance %d: debited more than once", bal)
		}
		return bal == credit-1234 && held == 0
	}
	for range 2 { // a second start must not debit again
		rc, err := acquireRedis(srv.URL(), nil, dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := rc.start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !settled() {
			if time.Now().After(deadline) {
				t.Fatal("the journal's settlement was not applied within 10s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n, err := rdb.XLen(ctx, billing.UsageStream).Result(); err != nil || n != 1 {
			t.Fatalf("usage stream holds %d records (%v), want 1", n, err)
		}
		rc.release()
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "journal-*.log")); len(left) != 0 {
		t.Fatalf("journal files left after a clean stop: %v", left)
	}
}

// TestSettlerBatchesAndSurvivesAFlushedScriptCache settles many requests
// at once through the settler (pipelined batches) on a Redis whose script
// cache was flushed: each is applied exactly once, and the journal empties.
func TestSettlerBatchesAndSurvivesAFlushedScriptCache(t *testing.T) {
	const credit, n, cost = 1_000_000_000, 300, 1000
	srv, rdb, acc, hash := fundedKey(t, "u2", credit)
	dir := t.TempDir()
	ctx := context.Background()
	grants := make([]billing.Grant, n)
	for i := range grants {
		g, err := acc.Authorize(ctx, billing.AuthRequest{KeyHash: hash, Model: "m", Hold: 5000, RequestID: billing.NewRequestID()})
		if err != nil {
			t.Fatal(err)
		}
		grants[i] = g
	}
	rc, err := acquireRedis(srv.URL(), nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.release()
	if err := rc.start(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	tr := new(tracker)
	for _, g := range grants {
		rc.settleLater(spooled{Grant: g, Cost: cost, Tokens: 1, Record: json.RawMessage(`{"request_id":"` + g.RequestID + `"}`)}, tr, rc.settler.log, nil)
	}
	select {
	case <-tr.idle():
	case <-time.After(15 * time.Second):
		t.Fatal("settlements still pending after 15s")
	}
	bal, held, err := acc.Balance(ctx, "u2")
	if err != nil || bal != credit-n*cost || held != 0 {
		t.Fatalf("balance %d held %d (%v), want %d and 0", bal, held, err, credit-n*cost)
	}
	if got := rdb.XLen(ctx, billing.UsageStream).Val(); got != n {
		t.Fatalf("usage stream holds %d records, want %d", got, n)
	}
	if p := rc.journal.Pending(); p != 0 {
		t.Fatalf("journal still holds %d settlements", p)
	}
	if rc.spool.Len() != 0 {
		t.Fatalf("%d settlements went to the spool", rc.spool.Len())
	}
}
