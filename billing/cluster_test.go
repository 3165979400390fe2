package billing

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

// startCluster starts a one-node Redis Cluster that owns every slot and
// returns a cluster client for it and a plain client. Redis Cluster
// refuses any command whose keys lie in more than one hash slot
// (CROSSSLOT), on one node as on many.
func startCluster(t *testing.T) (*redis.ClusterClient, *redis.Client) {
	t.Helper()
	srv, plain := startClusterNode(t)
	ctx := t.Context()
	if err := plain.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, clusterSlots-1).Err(); err != nil {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		info, err := plain.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok after 10s: %q, %v", info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb, plain
}

// startClusterNode starts a Redis with cluster support, owning no slots
// yet, and returns a plain client for it.
func startClusterNode(t *testing.T) (*testredis.Server, *redis.Client) {
	t.Helper()
	srv := testredis.StartWith(t, "--cluster-enabled", "yes")
	plain := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = plain.Close() })
	return srv, plain
}

// Our slot function is Redis' own, and every key of an account, its usage
// stream included, is in one slot.
func TestClusterSlotsMatchRedis(t *testing.T) {
	_, plain := startClusterNode(t)
	ctx := t.Context()
	keys := []string{"", "a", "foo", "{user1000}.following", "{}x", "x{}y", "{a}{b}", "123456789"}
	for i := range 200 {
		keys = append(keys, fmt.Sprintf("user-%d", i), AccountKey(fmt.Sprintf("u.%d", i), "acct"))
	}
	keys = append(keys, UsageStreams...)
	for _, k := range keys {
		want, err := plain.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := clusterSlot(k); int64(got) != want {
			t.Errorf("clusterSlot(%q) = %d; Redis says %d", k, got, want)
		}
	}
	// Each shard's stream lies in its own sixteenth of the slots, and a
	// user's keys in the slot of the user's stream.
	for n, s := range UsageStreams {
		if got := int(clusterSlot(s)) / (clusterSlots / UsageShards); got != n {
			t.Errorf("stream %s is in slot range %d, want %d", s, got, n)
		}
	}
	shards := map[int]bool{}
	for i := range 200 {
		u := fmt.Sprintf("user-%d", i)
		shards[shardOf(u)] = true
		for _, k := range []string{acctKey(u), holdsKey(u), leaseSeqKey(u, "n.1"), replayKey(u, "req_1"),
			rateKey(u, "key_1", time.Now(), "t"), appliedKey(u)} {
			if clusterSlot(k) != clusterSlot(UsageStreamOf(u)) {
				t.Fatalf("%s is not in the slot of %s", k, UsageStreamOf(u))
			}
		}
	}
	if len(shards) != UsageShards {
		t.Errorf("200 users fell in %d of %d shards", len(shards), UsageShards)
	}
}

// Every script runs on Redis Cluster: each declares all the keys it
// touches, in one slot, usage records included.
func TestScriptsRunOnCluster(t *testing.T) {
	rdb, _ := startCluster(t)
	a := NewAccounts(rdb)
	ctx := t.Context()
	users := []string{"alice", "bob", "carol", "dave"}
	for i, u := range users {
		hash := HashKey("sk-cluster-" + u)
		if err := a.PutKey(ctx, hash, KeyRecord{ID: "key_" + u, User: u, Active: true, RPM: 100, TPM: 100_000}); err != nil {
			t.Fatalf("PutKey: %v", err)
		}
		if err := a.ApplyCredit(ctx, u, int64(i+1), 10*unit); err != nil {
			t.Fatalf("ApplyCredit %s: %v", u, err)
		}
		// A per-request hold, settled with tokens counted in the tpm window.
		g, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: unit, RequestID: "req_" + u, Tokens: 10})
		if err != nil {
			t.Fatalf("Authorize %s: %v", u, err)
		}
		rec := []byte(`{"request_id":"req_` + u + `","user":"` + u + `"}`)
		if ok, err := a.Settle(ctx, g, unit/10, 10, rec, SettleLive); err != nil || !ok {
			t.Fatalf("Settle %s: %v, %v", u, ok, err)
		}
		if ok, err := a.Settle(ctx, g, unit/10, 10, rec, SettleReplay); err != nil || ok {
			t.Fatalf("replayed Settle %s: applied %v, %v", u, ok, err)
		}
		nohold := Grant{User: u, KeyID: "key_" + u, RequestID: "req_nohold_" + u}
		if ok, err := a.Settle(ctx, nohold, unit/10, 0, rec, SettleReplayNoHold); err != nil || !ok {
			t.Fatalf("no-hold Settle %s: %v, %v", u, ok, err)
		}
		// A balance lease, settled, given back.
		lg, err := a.TakeLease(ctx, LeaseTake{User: u, ID: "n1.1", Want: unit, Min: 1, Share: 1, TTL: time.Minute})
		if err != nil || lg.Granted != unit {
			t.Fatalf("TakeLease %s: %+v, %v", u, lg, err)
		}
		if n, err := a.SettleLease(ctx, u, "n1.1", []LeaseSettlement{{Seq: 1, Cost: unit / 10, Record: rec}}); err != nil || n != 1 {
			t.Fatalf("SettleLease %s: %d, %v", u, n, err)
		}
		if _, err := a.ReturnLease(ctx, u, "n1.1", -1); err != nil {
			t.Fatalf("ReturnLease %s: %v", u, err)
		}
		if _, err := a.TakeRate(ctx, RateTake{User: u, KeyID: "key_" + u, RPM: 100, TPM: 100_000, Window: time.Now().Truncate(time.Minute),
			WantRequests: 5, NeedRequests: 1, WantTokens: 100, NeedTokens: 1}); err != nil {
			t.Fatalf("TakeRate %s: %v", u, err)
		}
		// An admin debit (it publishes a recall).
		if _, err := a.Credit(ctx, u, -unit); err != nil {
			t.Fatalf("debit %s: %v", u, err)
		}
		bal, held, err := a.Balance(ctx, u)
		if want := 10*unit - 3*unit/10 - unit; err != nil || bal != want || held != 0 {
			t.Fatalf("%s: balance %s held %s, %v; want %s, 0", u, bal, held, err, want)
		}
		// Three records, all in the user's shard.
		if n, err := rdb.XLen(ctx, UsageStreamOf(u)).Result(); err != nil || n < 3 {
			t.Fatalf("%s's usage stream holds %d records, %v", u, n, err)
		}
	}
	if err := a.Seed(ctx, map[string]money.Nanos{"erin": unit}, map[string]KeyRecord{HashKey("sk-erin"): {ID: "key_e", User: "erin", Active: true}}); err != nil {
		t.Fatalf("Seed: %v", err)
	}
	live, err := a.Live(ctx, append(users, "erin"))
	if err != nil || len(live) != len(users)+1 {
		t.Fatalf("Live: %v, %v", live, err)
	}
}

// Several customers' lease settlements go in one script when their
// accounts share a shard; a cluster runs it (one hash slot), and a batch
// spanning shards is refused before anything is sent.
func TestSettleLeasesOneShard(t *testing.T) {
	rdb, _ := startCluster(t)
	a := NewAccounts(rdb)
	ctx := t.Context()
	var same []string // users of alice's shard
	other := ""       // a user of another shard
	for i := 0; len(same) < 3 || other == ""; i++ {
		u := fmt.Sprintf("user%d", i)
		switch {
		case shardOf(u) == shardOf("alice"):
			same = append(same, u)
		case other == "":
			other = u
		}
	}
	rec := []byte(`{"request_id":"r"}`)
	var batches []LeaseBatch
	for i, u := range same {
		if err := a.ApplyCredit(ctx, u, 1, 10*unit); err != nil {
			t.Fatal(err)
		}
		if _, err := a.TakeLease(ctx, LeaseTake{User: u, ID: "n1.1", Want: unit, Share: 1, TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
		var s []LeaseSettlement
		for q := range i + 1 { // user i settles i+1 requests of 0.10
			s = append(s, LeaseSettlement{Seq: int64(q + 1), Cost: unit / 10, Record: rec})
		}
		batches = append(batches, LeaseBatch{User: u, Lease: "n1.1", Settlements: s})
	}
	n, err := a.SettleLeases(ctx, batches)
	if err != nil || len(n) != 3 || n[0].Applied != 1 || n[1].Applied != 2 || n[2].Applied != 3 {
		t.Fatalf("SettleLeases = %v, %v; want [1 2 3]", n, err)
	}
	// Replayed whole: nothing applies twice.
	if n, err := a.SettleLeases(ctx, batches); err != nil || n[0].Applied+n[1].Applied+n[2].Applied != 0 {
		t.Fatalf("replayed SettleLeases = %v, %v; want none applied", n, err)
	}
	for i, u := range same {
		spent := money.Nanos(i+1) * unit / 10
		wantRawHeld(t, a, u, 10*unit-spent, unit-spent) // the lease paid for them
	}
	// One entry for the script, a batch of the six records.
	if n, err := rdb.XLen(ctx, UsageStreamOf("alice")).Result(); err != nil || n != 1 {
		t.Fatalf("the shard's usage stream holds %d entries, %v; want 1", n, err)
	}
	if n, err := UsageRecords(ctx, rdb); err != nil || n != 6 {
		t.Fatalf("the usage streams hold %d records, %v; want 6", n, err)
	}
	twice := append(batches[:1:1], batches[0])
	if _, err := a.SettleLeases(ctx, twice); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("one lease twice in a call: %v; want refused", err)
	}
	mixed := append(batches[:1:1], LeaseBatch{User: other, Lease: "n1.1", Settlements: batches[0].Settlements})
	if _, err := a.SettleLeases(ctx, mixed); err == nil || !strings.Contains(err.Error(), "different shards") {
		t.Fatalf("settlements across shards: %v; want refused", err)
	}
}
