package settle

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// Settlements under a lease, mixed with settlements of holds, go through
// the workers in one script per lease and batch, each applied once: the
// balance is debited their sum and the lease by what it covered.
func TestLeaseSettlementsBatched(t *testing.T) {
	const credit, n, cost = 1_000_000_000, 300, 1000
	srv, rdb, acc, hash := fundedKey(t, "u3", credit)
	ctx := context.Background()
	g, err := acc.TakeLease(ctx, billing.LeaseTake{User: "u3", ID: "node.1", Want: 500_000, Share: 1, TTL: time.Minute})
	if err != nil || g.Granted != 500_000 {
		t.Fatalf("TakeLease = %+v, %v", g, err)
	}
	p, _ := startPipeline(t, srv, t.TempDir())
	var wg sync.WaitGroup
	for i := range n {
		rec := Record{RequestID: fmt.Sprintf("req_l%d", i), User: "u3", KeyID: "k-u3", Hold: cost, Cost: cost,
			Usage: json.RawMessage(fmt.Sprintf(`{"request_id":"req_l%d"}`, i)), Lease: "node.1", Seq: int64(i + 1)}
		if i%10 == 0 { // a request that took a hold in Redis instead
			hg, err := acc.Authorize(ctx, billing.AuthRequest{KeyHash: hash, Hold: cost, RequestID: rec.RequestID})
			if err != nil {
				t.Fatal(err)
			}
			rec = recordOf(hg)
			rec.Cost, rec.Usage = cost, json.RawMessage(`{"request_id":"`+hg.RequestID+`"}`)
		}
		wg.Add(1)
		p.Later(rec, nil, wg.Done)
	}
	wg.Wait()
	bal, held, err := acc.Balance(ctx, "u3")
	if err != nil || bal != credit-n*cost || held != 0 {
		t.Fatalf("balance %d held %d (%v); want %d and 0", bal, held, err, credit-n*cost)
	}
	if st, _ := acc.Leases(ctx, "u3"); st.Leases["node.1"] != 500_000-(n-n/10)*cost {
		t.Fatalf("lease left %s; want %d", st.Leases["node.1"], 500_000-(n-n/10)*cost)
	}
	if got, _ := billing.UsageRecords(ctx, rdb); got != n {
		t.Fatalf("usage stream holds %d records, want %d", got, n)
	}
	if p.Spooled() != 0 {
		t.Fatalf("%d settlements went to the spool", p.Spooled())
	}
}

// Lease settlements of customers of many shards, handed to the workers at
// once, are settled together (one script a batch on a single Redis): each
// is applied once, to its own customer, and its record reaches a usage
// stream once.
func TestLeaseSettlementsManyShards(t *testing.T) {
	const credit, users, each, cost = 1_000_000, 48, 5, 1000
	srv, rdb, acc, _ := fundedKey(t, "m0", credit)
	ctx := context.Background()
	shards := map[string]bool{}
	for u := range users {
		user := fmt.Sprintf("m%d", u)
		shards[billing.UsageStreamOf(user)] = true
		if u > 0 {
			if _, err := acc.Credit(ctx, user, credit); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := acc.TakeLease(ctx, billing.LeaseTake{User: user, ID: "node.1", Want: credit / 2, Share: 1, TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	if len(shards) < 8 {
		t.Fatalf("the customers are on %d shards; the test wants many", len(shards))
	}
	p, _ := startPipeline(t, srv, t.TempDir())
	var wg sync.WaitGroup
	for i := range each {
		for u := range users {
			user := fmt.Sprintf("m%d", u)
			id := fmt.Sprintf("req_%s_%d", user, i)
			wg.Add(1)
			p.Later(Record{RequestID: id, User: user, KeyID: "k-" + user, Hold: cost, Cost: cost,
				Usage: json.RawMessage(`{"request_id":"` + id + `"}`), Lease: "node.1", Seq: int64(i + 1)}, nil, wg.Done)
		}
	}
	wg.Wait()
	for u := range users {
		user := fmt.Sprintf("m%d", u)
		bal, held, err := acc.Balance(ctx, user)
		if err != nil || bal != credit-each*cost || held != 0 {
			t.Fatalf("%s: balance %d held %d (%v); want %d and 0", user, bal, held, err, credit-each*cost)
		}
		if st, _ := acc.Leases(ctx, user); st.Leases["node.1"] != credit/2-each*cost {
			t.Fatalf("%s: lease left %s; want %d", user, st.Leases["node.1"], credit/2-each*cost)
		}
	}
	if got, _ := billing.UsageRecords(ctx, rdb); got != users*each {
		t.Fatalf("usage streams hold %d records, want %d", got, users*each)
	}
	if p.Spooled() != 0 {
		t.Fatalf("%d settlements went to the spool", p.Spooled())
	}
}

// A lease settlement left in the journal by a killed process is applied
// at the next start, once, even when the first attempt had applied it
// before the kill.
func TestLeaseJournalLeftoverAppliedOnce(t *testing.T) {
	const credit = 1_000_000_000
	srv, rdb, acc, _ := fundedKey(t, "u4", credit)
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := acc.TakeLease(ctx, billing.LeaseTake{User: "u4", ID: "node.2", Want: 100_000, Share: 1, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	spath := spoolPath(dir, target(srv))
	jr, err := openJournal(filepath.Dir(spath), journalPrefix(spath))
	if err != nil {
		t.Fatal(err)
	}
	for i, applied := range []bool{true, false} {
		rec := Record{RequestID: fmt.Sprintf("req_j%d", i), User: "u4", Hold: 5000, Cost: 1234,
			Usage: json.RawMessage(`{}`), Lease: "node.2", Seq: int64(i + 1)}
		rec.Mode = rec.mode(replayAttempt)
		if _, err := jr.Append(rec.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
		if applied { // the kill came after Redis applied it, before Done
			if _, err := acc.SettleLease(ctx, "u4", "node.2", []billing.LeaseSettlement{rec.leaseSettlement()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := jr.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_, stop := startPipeline(t, srv, dir)
		waitFor(t, func() bool {
			bal, _, _ := acc.Balance(ctx, "u4")
			return bal == credit-2*1234
		})
		stop()
	}
	st, _ := acc.Leases(ctx, "u4")
	if bal, _, _ := acc.Balance(ctx, "u4"); bal != credit-2*1234 || st.Leases["node.2"] != 100_000-2*1234 {
		t.Fatalf("balance %d lease %s; want %d and %d", bal, st.Leases["node.2"], credit-2*1234, 100_000-2*1234)
	}
	if n, _ := billing.UsageBacklog(ctx, rdb); n != 2 {
		t.Fatalf("usage stream holds %d records, want 2", n)
	}
}

// waitFor waits up to 10s for cond.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The workers ask the Renewal hook for each lease of a batch and report
// what the script renewed to Renewed: the lease's deadline in Redis
// moves, and a lease the hook did not name keeps its own.
func TestLeaseSettlementsRenew(t *testing.T) {
	srv, rdb, acc, _ := fundedKey(t, "u3", 1_000_000_000)
	ctx := context.Background()
	for _, id := range []string{"node.1", "node.2"} {
		if _, err := acc.TakeLease(ctx, billing.LeaseTake{User: "u3", ID: id, Want: 500_000, Share: 4, TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := func(id string) float64 { return rdb.ZScore(ctx, billing.AccountKey("u3", "ldl"), id).Val() }
	before := deadline("node.2")
	type renewal struct {
		user, lease string
		renew       time.Duration
	}
	var mu sync.Mutex
	var got []renewal
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer client.Close()
	p := New(client, Config{Dir: t.TempDir(), Target: target(srv), Hooks: Hooks{
		Renewal: func(user, lease string, now time.Time) time.Duration {
			if lease == "node.1" {
				return time.Hour
			}
			return 0
		},
		Renewed: func(user, lease string, sent time.Time, renew time.Duration) {
			mu.Lock()
			got = append(got, renewal{user, lease, renew})
			mu.Unlock()
		},
	}})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	var wg sync.WaitGroup
	for i := range 6 {
		id := []string{"node.1", "node.2"}[i%2]
		rec := Record{RequestID: fmt.Sprintf("req_r%d", i), User: "u3", KeyID: "k-u3", Hold: 1000, Cost: 1000,
			Usage: json.RawMessage(fmt.Sprintf(`{"request_id":"req_r%d"}`, i)), Lease: id, Seq: int64(i/2 + 1)}
		wg.Add(1)
		p.Later(rec, nil, wg.Done)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(got) == 0 {
		t.Fatal("no renewal reported")
	}
	for _, r := range got {
		if r != (renewal{"u3", "node.1", time.Hour}) {
			t.Fatalf("renewal reported: %+v", r)
		}
	}
	if d := time.UnixMilli(int64(deadline("node.1"))); d.Before(time.Now().Add(50 * time.Minute)) {
		t.Fatalf("node.1's deadline %v; want about an hour from now", d)
	}
	if d := deadline("node.2"); d != before {
		t.Fatalf("node.2's deadline moved from %v to %v", before, d)
	}
}
