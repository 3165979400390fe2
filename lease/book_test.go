package lease

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

const unit money.Nanos = money.NanosPerUnit

func newAccounts(tb testing.TB) (*billing.Accounts, *redis.Client) {
	tb.Helper()
	srv := testredis.Start(tb)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	tb.Cleanup(func() { _ = rdb.Close() })
	return billing.NewAccounts(rdb), rdb
}

// balance reads user's balance and everything held (leases included)
// straight from Redis.
func balance(t *testing.T, acc *billing.Accounts, user string) (money.Nanos, money.Nanos) {
	t.Helper()
	v, err := acc.Client().HMGet(context.Background(), billing.AccountKey(user, "acct"), "balance", "held").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := func(x any) money.Nanos {
		s, _ := x.(string)
		i, _ := strconv.ParseInt(s, 10, 64)
		return money.Nanos(i)
	}
	return n(v[0]), n(v[1])
}

// leaseNow takes b's lease for user at once, as the background refill
// does.
func leaseNow(b *Book, user string) {
	b.wg.Wait() // a refill already started
	a := b.account(user)
	a.mu.Lock()
	a.refilling = true
	a.mu.Unlock()
	b.refill(a)
}

// settle applies a ticket's settlement in Redis, as the settlement
// pipeline does.
func settle(t *testing.T, b *Book, tk Ticket, cost money.Nanos) {
	seq := b.Settle(tk, cost)
	_, err := b.acc.SettleLease(context.Background(), tk.acct.user, tk.LeaseID(),
		[]billing.LeaseSettlement{{Seq: seq, Cost: cost, Record: []byte(`{}`)}})
	if err != nil {
		t.Error(err)
	}
}

// A returning customer is admitted from memory; a recall gives the lease
// back and sends the next request to Redis; Stop gives everything back.
func TestAdmitRecallStop(t *testing.T) {
	acc, _ := newAccounts(t)
	if _, err := acc.Credit(t.Context(), "u", 10*unit); err != nil {
		t.Fatal(err)
	}
	b := New(acc, Config{Share: 1, Max: unit})
	if _, ok := b.Admit("u", unit/10, unit/10); ok {
		t.Fatal("admitted before any lease was taken")
	}
	leaseNow(b, "u")
	if _, held := balance(t, acc, "u"); held != unit {
		t.Fatalf("held after the lease = %s; want 1.00 (lease_max)", held)
	}
	tk, ok := b.Admit("u", unit/1000, unit/100)
	if !ok || tk.Hold != unit/100 {
		t.Fatalf("Admit = %+v, %v; want a hold of 0.01 (up to) from the lease", tk, ok)
	}
	settle(t, b, tk, unit/1000)
	if bal, held := balance(t, acc, "u"); bal != 10*unit-unit/1000 || held != unit-unit/1000 {
		t.Fatalf("after one settlement: balance %s held %s", bal, held)
	}

	in, ok := b.Admit("u", unit/1000, unit/1000) // stays in flight across the recall
	if !ok {
		t.Fatal("second Admit refused")
	}
	old := tk.LeaseID()
	b.Recall("u")
	if _, ok := b.Admit("u", unit/1000, unit/1000); ok {
		t.Fatal("admitted from a recalled lease")
	}
	b.wg.Wait() // the recalled lease given back, a new one taken
	st, _ := acc.Leases(t.Context(), "u")
	if len(st.Leases) != 2 || st.Leases[old] != unit/1000 {
		t.Fatalf("leases after the recall = %v; want %s holding only the request in flight (0.001), and a new one", st.Leases, old)
	}
	settle(t, b, in, unit/2000)
	b.Stop(context.Background())
	if bal, held := balance(t, acc, "u"); bal != 10*unit-unit/1000-unit/2000 || held != 0 {
		t.Fatalf("after Stop: balance %s held %s; want 9.9985 and 0", bal, held)
	}
	if st, _ := acc.Leases(t.Context(), "u"); len(st.Leases) != 0 {
		t.Fatalf("leases left after Stop: %v", st.Leases)
	}
}

// Three nodes lease one small balance while many requests, each costing
// up to its whole hold, run at once: balance − held never goes below 0,
// the requests admitted never cost more than the balance, and after
// Stop the balance is the credit minus exactly what was settled.
func TestThreeNodesNeverOverdraw(t *testing.T) {
	acc, _ := newAccounts(t)
	ctx := t.Context()
	const credit = unit // 1.00
	if _, err := acc.Credit(ctx, "u", credit); err != nil {
		t.Fatal(err)
	}
	key := billing.HashKey("sk-three")
	if err := acc.PutKey(ctx, key, billing.KeyRecord{ID: "k", User: "u", Active: true}); err != nil {
		t.Fatal(err)
	}
	nodes := make([]*Book, 3)
	for i := range nodes {
		nodes[i] = New(acc, Config{Share: 3, Min: unit / 100, Max: unit / 2})
	}
	var (
		spent   atomic.Int64
		stop    atomic.Bool
		wg      sync.WaitGroup
		sampler sync.WaitGroup
		lowest  atomic.Int64
	)
	lowest.Store(int64(credit))
	sampler.Go(func() {
		for !stop.Load() {
			bal, held := balance(t, acc, "u")
			if v := int64(bal - held); v < lowest.Load() {
				lowest.Store(v)
			}
		}
	})
	for w := range 60 {
		wg.Go(func() {
			b := nodes[w%3]
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range 200 {
				hold := unit/1000 + money.Nanos(r.Int64N(int64(unit/100)))
				tk, ok := b.Admit("u", hold, hold)
				if !ok {
					// A lease is asked for in the background; this request
					// takes a hold in Redis, as the gateway does.
					g, err := acc.Authorize(ctx, billing.AuthRequest{KeyHash: key, Hold: hold,
						RequestID: fmt.Sprintf("r%d.%d", w, i)})
					if err != nil {
						continue // refused: the balance is spoken for
					}
					cost := g.Hold - money.Nanos(r.Int64N(int64(g.Hold)/2))
					spent.Add(int64(cost))
					if _, err := acc.Settle(ctx, g, cost, 0, []byte(`{}`), billing.SettleLive); err != nil {
						t.Error(err)
					}
					continue
				}
				cost := tk.Hold - money.Nanos(r.Int64N(int64(tk.Hold)/2))
				spent.Add(int64(cost))
				settle(t, b, tk, cost)
			}
		})
	}
	wg.Wait()
	for _, b := range nodes {
		b.Stop(context.Background())
	}
	stop.Store(true)
	sampler.Wait()
	bal, held := balance(t, acc, "u")
	if lowest.Load() < 0 {
		t.Errorf("balance − held went down to %s", money.Nanos(lowest.Load()))
	}
	if bal != credit-money.Nanos(spent.Load()) || held != 0 {
		t.Errorf("balance %s held %s; want %s and 0", bal, held, credit-money.Nanos(spent.Load()))
	}
	if bal < 0 {
		t.Errorf("overdrawn: balance %s", bal)
	}
	if spent.Load() < int64(credit)/2 {
		t.Errorf("only %s of 1.00 was spent: leases did not admit", money.Nanos(spent.Load()))
	}
	if st, _ := acc.Leases(ctx, "u"); len(st.Leases) != 0 {
		t.Errorf("leases left: %v", st.Leases)
	}
	t.Logf("spent %s; admitted %d locally", money.Nanos(spent.Load()),
		nodes[0].stats.Admitted.Load()+nodes[1].stats.Admitted.Load()+nodes[2].stats.Admitted.Load())
}

// A lease Redis lost (restarted empty, or expired) is noticed at the next
// refill and replaced by a new one.
func TestLostLeaseIsReplaced(t *testing.T) {
	acc, rdb := newAccounts(t)
	ctx := t.Context()
	if _, err := acc.Credit(ctx, "u", unit); err != nil {
		t.Fatal(err)
	}
	b := New(acc, Config{Share: 1, Max: unit / 2})
	b.Admit("u", unit/10, unit/10)
	leaseNow(b, "u")
	first := b.account("u").cur.ID
	if err := rdb.FlushDB(ctx).Err(); err != nil { // this test's own redis-server
		t.Fatal(err)
	}
	if _, err := acc.Credit(ctx, "u", unit); err != nil { // reconcile re-seeds
		t.Fatal(err)
	}
	leaseNow(b, "u") // the refill finds the lease gone
	if b.account("u").cur != nil {
		t.Fatal("a lost lease still admits")
	}
	leaseNow(b, "u")
	cur := b.account("u").cur
	if cur == nil || cur.ID == first {
		t.Fatalf("no new lease after the loss: %+v", cur)
	}
	if _, held := balance(t, acc, "u"); held != unit/2 {
		t.Fatalf("held = %s; want the new lease, 0.50", held)
	}
	b.Stop(context.Background())
}

// A request admitted with a hold in Redis primes the customer's lease, so
// the next one is admitted from memory.
func TestPrimeTakesALease(t *testing.T) {
	acc, _ := newAccounts(t)
	if _, err := acc.Credit(t.Context(), "u", 10*unit); err != nil {
		t.Fatal(err)
	}
	b := New(acc, Config{Share: 1, Max: unit})
	b.Prime("u", unit/100)
	b.wg.Wait()
	if _, ok := b.Admit("u", unit/1000, unit/100); !ok {
		t.Fatal("no lease after Prime")
	}
	b.Stop(context.Background())
}

// Admitting from a lease (which reads the lease sizes under the account's
// lock) and the janitor's sweep (which takes every account's lock under
// the Book's) run side by side without deadlock: a node once hung every
// request of a customer this way.
func TestAdmitAndSweepDoNotDeadlock(t *testing.T) {
	acc, _ := newAccounts(t)
	if _, err := acc.Credit(t.Context(), "u", 1000*unit); err != nil {
		t.Fatal(err)
	}
	b := New(acc, Config{Share: 1, Max: 100 * unit})
	b.Admit("u", unit/1000, unit/1000)
	leaseNow(b, "u")
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 100000 {
					if tk, ok := b.Admit("u", unit/1000, unit/1000); ok {
						b.Release(tk)
					}
				}
			})
		}
		wg.Go(func() {
			for range 100000 {
				b.sweep(time.Now())
			}
		})
		wg.Wait()
	}()
	select {
	case <-done:
		b.Stop(context.Background())
	case <-time.After(30 * time.Second):
		// Not stopped: Stop would wait on the deadlocked locks too.
		t.Fatal("Admit and sweep did not finish within 30s: deadlocked")
	}
}

// Stop while requests keep asking for leases: nothing runs a refill in
// line under the account's lock (it takes that lock), so Stop and the
// callers all return.
func TestStopWhileLeasesAreWanted(t *testing.T) {
	acc, _ := newAccounts(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for round := range 50 {
			b := New(acc, Config{Share: 1, Max: unit})
			b.Start()
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := range 50 {
						b.Prime(fmt.Sprintf("s%d-%d-%d", round, g, i), unit/1000)
					}
				})
			}
			b.Stop(context.Background())
			wg.Wait()
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Stop and Prime did not finish within 60s: deadlocked")
	}
}

// A lease whose settlements renew it (the settle pipeline's Renewal and
// Renewed hooks) is trusted on: its node asks no renewal of its own, and
// Redis keeps it past the deadline the lease was taken with.
func TestSettlementsRenewTheLease(t *testing.T) {
	acc, rdb := newAccounts(t)
	ctx := t.Context()
	if _, err := acc.Credit(ctx, "u", 10*unit); err != nil {
		t.Fatal(err)
	}
	const ttl = time.Hour
	b := New(acc, Config{Share: 1, Max: unit, TTL: ttl})
	defer b.Stop(ctx)
	b.Admit("u", unit/100, unit/100)
	leaseNow(b, "u")
	tk, ok := b.Admit("u", unit/100, unit/100)
	if !ok {
		t.Fatal("not admitted from the lease")
	}
	id := tk.LeaseID()
	a := b.account("u")
	a.mu.Lock()
	start, renewAt := a.cur.deadline.Add(-ttl*5/6), a.cur.renewAt
	a.mu.Unlock()

	// Before a sixth of the TTL has passed: no renewal; another lease or
	// customer: none either.
	if r := b.Renewal("u", id, start.Add(ttl/6-time.Second)); r != 0 {
		t.Fatalf("renewal %v asked for right after the lease was taken", r)
	}
	if r := b.Renewal("u", "other.1", start.Add(ttl/2)); r != 0 {
		t.Fatalf("renewal %v asked for a lease the node does not hold", r)
	}
	if r := b.Renewal("v", id, start.Add(ttl/2)); r != 0 {
		t.Fatalf("renewal %v asked for an unknown customer", r)
	}
	later := start.Add(ttl / 4)
	renew := b.Renewal("u", id, later)
	if renew != ttl {
		t.Fatalf("renewal %v at a quarter of the TTL; want %v", renew, ttl)
	}
	// The settle script renews it in Redis; the node then trusts it on.
	seq := b.Settle(tk, unit/1000)
	res, err := acc.SettleLeases(ctx, []billing.LeaseBatch{{User: "u", Lease: id, Renew: renew,
		Settlements: []billing.LeaseSettlement{{Seq: seq, Cost: unit / 1000, Record: []byte(`{}`)}}}})
	if err != nil || len(res) != 1 || !res[0].Renewed {
		t.Fatalf("settle script: %v, %v; want the lease renewed", res, err)
	}
	d, err := rdb.ZScore(ctx, billing.AccountKey("u", "ldl"), id).Result()
	if err != nil || time.UnixMilli(int64(d)).Before(time.Now().Add(ttl-time.Minute)) {
		t.Fatalf("Redis deadline %v (%v); want about an hour from now", d, err)
	}
	b.Renewed("u", id, later, renew)
	a.mu.Lock()
	gotDeadline, gotRenewAt := a.cur.deadline, a.cur.renewAt
	a.mu.Unlock()
	if !gotDeadline.Equal(later.Add(ttl*5/6)) || !gotRenewAt.Equal(later.Add(ttl/3)) || !gotRenewAt.After(renewAt) {
		t.Fatalf("after the renewal: deadline %v, renew at %v; want %v and %v",
			gotDeadline, gotRenewAt, later.Add(ttl*5/6), later.Add(ttl/3))
	}
	// A report made under another lease_ttl is not trusted: a refill may
	// have moved Redis's deadline closer since.
	b.SetSizes(unit, 1, ttl/2)
	b.Renewed("u", id, later.Add(ttl/2), ttl)
	a.mu.Lock()
	moved := !a.cur.deadline.Equal(gotDeadline)
	a.mu.Unlock()
	if moved {
		t.Fatal("a renewal under the old lease_ttl moved the deadline")
	}
	// Recalled: no renewal, and a late report changes nothing.
	b.Recall("u")
	if r := b.Renewal("u", id, later.Add(ttl/2)); r != 0 {
		t.Fatalf("renewal %v asked for a recalled lease", r)
	}
	b.Renewed("u", id, later.Add(ttl/2), ttl)
	if b.Stats().Renewed.Load() != 3 {
		t.Fatalf("renewals counted %d, want 3", b.Stats().Renewed.Load())
	}
}

// A recalled lease with a request still in flight stays reserved in Redis
// for as long as the request runs, past the lease's TTL: the janitor
// renews it, adding nothing. Another node can then lease none of the money
// that request holds, and its settlement never overdraws.
func TestRecalledLeaseStaysReservedWhileRequestsRun(t *testing.T) {
	acc, _ := newAccounts(t)
	if _, err := acc.Credit(t.Context(), "u", 4*unit); err != nil {
		t.Fatal(err)
	}
	const ttl = 1500 * time.Millisecond
	b := New(acc, Config{Share: 1, Max: 4 * unit, TTL: ttl, Idle: 300 * time.Millisecond})
	defer b.Stop(context.Background())
	b.Admit("u", 4*unit, 4*unit) // sizes the lease for such requests
	leaseNow(b, "u")
	tk, ok := b.Admit("u", 4*unit, 4*unit)
	if !ok {
		t.Fatal("not admitted from the lease")
	}
	b.Start()     // the janitor
	b.Recall("u") // an admin debit of 0, say: the lease admits no more
	// Twice the TTL: a lease nobody renewed would be gone from Redis.
	time.Sleep(2*ttl + ttl/3)
	g, err := acc.TakeLease(t.Context(), billing.LeaseTake{User: "u", ID: "other-node.1", Want: 4 * unit, Min: 1, Share: 1, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if g.Granted != 0 {
		t.Fatalf("another node leased %s of the money a request in flight holds", g.Granted)
	}
	settle(t, b, tk, 4*unit)
	if bal, held := balance(t, acc, "u"); bal != 0 || held != 0 {
		t.Fatalf("after the request settled: balance %s, held %s; want 0 and 0", bal, held)
	}
	a := b.known("u")
	a.mu.Lock()
	draining := len(a.draining)
	a.mu.Unlock()
	if draining != 0 {
		t.Fatalf("%d leases still draining after their last request settled", draining)
	}
}
