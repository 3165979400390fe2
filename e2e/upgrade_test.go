package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// toFirstLayout rewrites a test's Redis database as a gateway of the first
// key layout left it: account keys tagged with the user ID alone
// (ait:{<user>}:<suffix>) and one usage stream, ait:usage.
func toFirstLayout(t *testing.T, rdb *redis.Client) {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "ait:{#*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		_, rest, _ := strings.Cut(k, "}:")
		if rest == "usage" { // a shard's stream: its entries go to the one old stream
			msgs, err := rdb.XRange(ctx, k, "-", "+").Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "ait:usage", Values: m.Values}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if err := rdb.Del(ctx, k).Err(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		user, suffix, ok := strings.Cut(rest, ":")
		if !ok {
			t.Fatalf("unexpected key %s", k)
		}
		if err := rdb.Rename(ctx, k, "ait:{"+user+"}:"+suffix).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.Del(ctx, "ait:layout").Err(); err != nil {
		t.Fatal(err)
	}
}

// A ledger node upgraded from the first key layout moves Redis to the
// current one at start: the balance, the key and a usage record the old
// version settled but had not yet stored all come through, each once.
func TestUpgradeFromFirstLayout(t *testing.T) {
	db := newRedisDB(t)
	rdb := redisClient(db)
	defer rdb.Close()
	ctx := context.Background()
	n := newNode(t, "ledger", true, db)
	p := startCaddy(t, n)
	user, key := account(t, n, "upgrade@example.com", "10.00")
	hc := &http.Client{Timeout: 10 * time.Second}
	for i := range 3 {
		if res := chat(ctx, hc, n.siteURL(), key.Key, i%2 == 0, nil); res.status != http.StatusOK || !res.complete {
			t.Fatalf("request %d: %d %v %s", i, res.status, res.err, res.body)
		}
	}
	waitRows(t, n, user.ID, 3)
	p.stop(t)

	// As the old version left it, with one request settled (its cost
	// debited) whose record was still in the stream when it stopped.
	toFirstLayout(t, rdb)
	const lateCost = 123_000_000
	rec := usagelog.Record{RequestID: billing.NewRequestID(), Time: time.Now().UTC(), User: user.ID, KeyID: key.ID,
		Model: "test-model", Endpoint: "/v1/chat/completions", Status: 200, Outcome: "completed",
		InputTokens: 7, OutputTokens: 3, Cost: money.Nanos(lateCost), Currency: "USD"}
	b, err := rec.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "ait:usage", Values: []any{billing.UsageField, b}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HIncrBy(ctx, "ait:{"+user.ID+"}:acct", "balance", -lateCost).Err(); err != nil {
		t.Fatal(err)
	}
	before := getBalanceRaw(t, rdb, "ait:{"+user.ID+"}:acct")

	p = startCaddy(t, n)
	defer p.stop(t)
	rows := waitRows(t, n, user.ID, 4)
	if !hasRow(rows, rec.RequestID) {
		t.Fatalf("the record left in the old stream was not stored: %+v", rows)
	}
	if n, _ := rdb.Exists(ctx, "ait:usage", "ait:{"+user.ID+"}:acct").Result(); n != 0 {
		t.Errorf("%d first-layout keys left after the upgrade", n)
	}
	if got := getBalanceRaw(t, rdb, billing.AccountKey(user.ID, "acct")); got != before {
		t.Errorf("balance after the move %d, before %d", got, before)
	}
	if rep := reconcile(t, n); !rep.InSync {
		t.Errorf("ledger and Redis differ after the upgrade: %s", joinRaw(rep.Accounts))
	}
	// The key works, and bills the moved account.
	if res := chat(ctx, hc, n.siteURL(), key.Key, false, nil); res.status != http.StatusOK || !res.complete {
		t.Fatalf("request after the upgrade: %d %v %s", res.status, res.err, res.body)
	}
	waitRows(t, n, user.ID, 5)
	if rep := reconcile(t, n); !rep.InSync {
		t.Errorf("ledger and Redis differ after a request: %s", joinRaw(rep.Accounts))
	}
	log, _ := os.ReadFile(filepath.Join(n.dir, "caddy.log"))
	if !strings.Contains(string(log), "moved Redis to the current key layout") {
		t.Error("the log does not say the keys were moved")
	}
}

func getBalanceRaw(t *testing.T, rdb *redis.Client, key string) int64 {
	t.Helper()
	v, err := rdb.HGet(context.Background(), key, "balance").Int64()
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return v
}

func hasRow(rows []usageRecord, id string) bool {
	for _, r := range rows {
		if r.RequestID == id {
			return true
		}
	}
	return false
}
