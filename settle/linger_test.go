package settle

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

// withLinger sets the linger of the Pipelines started until the test
// ends, and returns a channel that gets a value each time a worker starts
// to linger.
func withLinger(t *testing.T, d time.Duration) <-chan struct{} {
	t.Helper()
	started := make(chan struct{}, 16)
	oldLinger, oldHook := linger, lingering
	linger, lingering = d, func() { started <- struct{}{} }
	t.Cleanup(func() { linger, lingering = oldLinger, oldHook })
	return started
}

// leaseRecord is settlement seq under lease node.1 of user.
func leaseRecord(user string, seq int64) Record {
	id := fmt.Sprintf("req_linger_%s_%d", user, seq)
	return Record{RequestID: id, User: user, KeyID: "k-" + user, Hold: 1000, Cost: 1000,
		Usage: json.RawMessage(`{"request_id":"` + id + `"}`), Lease: "node.1", Seq: seq}
}

// waitDone fails the test unless done gets a value or is closed within 10s.
func waitDone(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not within 10s", what)
	}
}

// later hands rec to p and returns a channel closed once it is settled.
func later(p *Pipeline, rec Record) <-chan struct{} {
	done := make(chan struct{})
	p.Later(rec, nil, func() { close(done) })
	return done
}

// scriptCalls is how many scripts srv has run.
func scriptCalls(t *testing.T, srv *testredis.Server) int {
	t.Helper()
	m, err := testredis.Info(srv.Addr, "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range []string{"cmdstat_evalsha", "cmdstat_eval"} {
		var calls int
		if _, err := fmt.Sscanf(m[k], "calls=%d", &calls); err == nil {
			n += calls
		}
	}
	return n
}

// With a linger far longer than the test: the first lease settlement goes
// out at once (the workers were idle); the next ones, queued right after,
// wait in one batch until a settlement that releases a hold in Redis
// arrives, which takes them along at once: one script for the lease and
// one for the hold (without lingering, the second settlement would have
// gone alone, and the batch would take three).
func TestLingerHoldSettlementGoesAtOnce(t *testing.T) {
	started := withLinger(t, time.Hour)
	srv, _, acc, hash := fundedKey(t, "u5", 1_000_000_000)
	ctx := context.Background()
	if _, err := acc.TakeLease(ctx, billing.LeaseTake{User: "u5", ID: "node.1", Want: 500_000, Share: 1, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	// Redis learns the settle script first, so that no NOSCRIPT retry
	// counts below.
	warm, err := acc.Authorize(ctx, billing.AuthRequest{KeyHash: hash, Hold: 1000, RequestID: "req_linger_warm"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acc.Settle(ctx, warm, 1000, 0, []byte(`{"request_id":"req_linger_warm"}`), billing.SettleLive); err != nil {
		t.Fatal(err)
	}
	p, _ := startPipeline(t, srv, t.TempDir())
	waitDone(t, later(p, leaseRecord("u5", 1)), "the first lease settlement of an idle pipeline settled")

	g, err := acc.Authorize(ctx, billing.AuthRequest{KeyHash: hash, Hold: 1000, RequestID: "req_linger_hold"})
	if err != nil {
		t.Fatal(err)
	}
	scripts := scriptCalls(t, srv)
	lingering := []<-chan struct{}{later(p, leaseRecord("u5", 2))}
	waitDone(t, started, "a worker lingering with a lease settlement queued right after a batch")
	for seq := int64(3); seq <= 4; seq++ {
		lingering = append(lingering, later(p, leaseRecord("u5", seq)))
	}
	hold := recordOf(g)
	hold.Cost, hold.Usage = 1000, json.RawMessage(`{"request_id":"req_linger_hold"}`)
	waitDone(t, later(p, hold), "the hold settlement settled")
	for i, done := range lingering {
		waitDone(t, done, fmt.Sprintf("lease settlement %d settled", i+2))
	}
	if got := scriptCalls(t, srv) - scripts; got != 2 {
		t.Errorf("the lingering batch ran %d scripts, want 2 (one for the lease, one for the hold)", got)
	}
	if bal, held, _ := acc.Balance(ctx, "u5"); bal != 1_000_000_000-6*1000 || held != 0 {
		t.Errorf("balance %d held %d; want %d and 0", bal, held, 1_000_000_000-6*1000)
	}
	if st, _ := acc.Leases(ctx, "u5"); st.Leases["node.1"] != 500_000-4*1000 {
		t.Errorf("lease left %d, want %d", st.Leases["node.1"], 500_000-4*1000)
	}
}

// leasedPipeline funds user, takes lease node.1 of want nanos and starts a
// Pipeline, whose first lease settlement (seq 1, of an idle pipeline) it
// waits for.
func leasedPipeline(t *testing.T, user string, want money.Nanos) (*testredis.Server, *redis.Client, *billing.Accounts, *Pipeline, func()) {
	t.Helper()
	srv, rdb, acc, _ := fundedKey(t, user, 1_000_000_000)
	if _, err := acc.TakeLease(context.Background(), billing.LeaseTake{User: user, ID: "node.1", Want: want, Share: 1, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	p, stop := startPipeline(t, srv, t.TempDir())
	waitDone(t, later(p, leaseRecord(user, 1)), "the first lease settlement of an idle pipeline settled")
	return srv, rdb, acc, p, stop
}

// Stop sends a lingering batch at once.
func TestLingerEndsAtStop(t *testing.T) {
	started := withLinger(t, time.Hour)
	_, _, acc, p, stop := leasedPipeline(t, "u6", 500_000)
	ctx := context.Background()
	lingering := later(p, leaseRecord("u6", 2))
	waitDone(t, started, "a worker lingering with a lease settlement queued right after a batch")
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	waitDone(t, lingering, "the lingering settlement settled at Stop")
	waitDone(t, stopped, "Stop returned")
	if bal, _, _ := acc.Balance(ctx, "u6"); bal != 1_000_000_000-2*1000 {
		t.Errorf("balance %d, want %d", bal, 1_000_000_000-2*1000)
	}
}

// A linger ends by itself: the lingering settlement goes out once the
// linger has passed since the last batch.
func TestLingerEnds(t *testing.T) {
	started := withLinger(t, time.Second)
	_, _, acc, p, _ := leasedPipeline(t, "u7", 500_000)
	ctx := context.Background()
	lingering := later(p, leaseRecord("u7", 2))
	waitDone(t, started, "a worker lingering with a lease settlement queued right after a batch")
	waitDone(t, lingering, "the lingering settlement settled")
	if bal, _, _ := acc.Balance(ctx, "u7"); bal != 1_000_000_000-2*1000 {
		t.Errorf("balance %d, want %d", bal, 1_000_000_000-2*1000)
	}
}

// A lingering worker keeps taking settlements off the queue: more of them
// than the queue holds are handed over without waiting, and go out
// together, one script per scriptMax of them, each applied once.
func TestLingerGathersPastTheQueue(t *testing.T) {
	started := withLinger(t, time.Hour)
	srv, rdb, acc, p, stop := leasedPipeline(t, "u8", 100_000_000)
	ctx := context.Background()
	scripts := scriptCalls(t, srv)
	const n = queueSize + 1000
	dones := make([]<-chan struct{}, 0, n)
	handed := make(chan struct{})
	go func() {
		defer close(handed)
		for seq := int64(2); seq < n+2; seq++ {
			dones = append(dones, later(p, leaseRecord("u8", seq)))
		}
	}()
	waitDone(t, started, "a worker lingering with a lease settlement queued right after a batch")
	select {
	case <-handed:
	case <-time.After(10 * time.Second):
		// Let the blocked Later return, so that the test can stop.
		go func() {
			for range p.workers.jobs {
			}
		}()
		t.Fatalf("%d settlements handed to a lingering pipeline: not within 10s", n)
	}
	select {
	case <-dones[0]:
		t.Fatal("a lingering settlement settled before Stop, with a linger of an hour")
	default:
	}
	stop()
	for i, done := range dones {
		waitDone(t, done, fmt.Sprintf("lease settlement %d settled", i+2))
	}
	if got, want := scriptCalls(t, srv)-scripts, (n+scriptMax-1)/scriptMax; got != want {
		t.Errorf("the lingering batch ran %d scripts, want %d", got, want)
	}
	if bal, held, _ := acc.Balance(ctx, "u8"); bal != 1_000_000_000-(n+1)*1000 || held != 0 {
		t.Errorf("balance %d held %d; want %d and 0", bal, held, 1_000_000_000-(n+1)*1000)
	}
	if st, _ := acc.Leases(ctx, "u8"); st.Leases["node.1"] != 100_000_000-(n+1)*1000 {
		t.Errorf("lease left %d, want %d", st.Leases["node.1"], 100_000_000-(n+1)*1000)
	}
	if got, _ := billing.UsageRecords(ctx, rdb); got != n+1 {
		t.Errorf("%d usage records in the stream, want %d", got, n+1)
	}
}
