package e2e

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// rawAccount reads an account straight from Redis: the balance, all that
// is held (leases included) and the leases by id.
func rawAccount(t *testing.T, rdb *redis.Client, user string) (balance, held int64, leases map[string]string) {
	t.Helper()
	ctx := context.Background()
	v, err := rdb.HMGet(ctx, billing.AccountKey(user, "acct"), "balance", "held").Result()
	if err != nil {
		t.Fatal(err)
	}
	num := func(x any) int64 {
		s, _ := x.(string)
		n, _ := strconv.ParseInt(s, 10, 64)
		return n
	}
	leases, err = rdb.HGetAll(ctx, billing.AccountKey(user, "leases")).Result()
	if err != nil {
		t.Fatal(err)
	}
	return num(v[0]), num(v[1]), leases
}

// waitLeases sends requests through nodes until Redis holds at least n
// leases on user's account (they are taken in the background after a
// key's first requests), for at most 10s.
func waitLeases(t *testing.T, rdb *redis.Client, user, key string, n int, nodes ...*nodeConfig) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		if _, _, l := rawAccount(t, rdb, user); len(l) >= n {
			return
		}
		if time.Now().After(deadline) {
			_, _, l := rawAccount(t, rdb, user)
			t.Fatalf("only %d leases after 10s of requests, want %d: %v", len(l), n, l)
		}
		res := chat(context.Background(), hc, nodes[i%len(nodes)].siteURL(), key, false, nil)
		if res.status != http.StatusOK {
			t.Fatalf("warm-up request: %d %s %v", res.status, res.body, res.err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ledgerCost sums the costs of user's usage rows.
func ledgerCost(t *testing.T, ledger *nodeConfig, user string) (int64, int) {
	t.Helper()
	rows := usageOf(t, ledger, user)
	var sum int64
	for _, r := range rows {
		sum += nanos(t, r.Cost)
	}
	return sum, len(rows)
}

// Three gateway nodes lease one small balance while 200 streams run at
// once: balance − held, sampled throughout, never goes below zero; the
// balance ends at the credit minus exactly the ledger's costs; and once
// the nodes stop, every lease has been given back.
func TestLeasesThreeNodesNeverOverdraw(t *testing.T) {
	const credits = "12.00" // a stream without max_tokens holds up to 0.52: ~23 at once
	db := newRedisDB(t)
	rdb := redisClient(db)
	defer rdb.Close()
	a := newNode(t, "A-ledger", true, db)
	b := newNode(t, "B-gateway", false, db)
	c := newNode(t, "C-gateway", false, db)
	procs := []*caddyProc{startCaddy(t, a), startCaddy(t, b), startCaddy(t, c)}
	nodes := []*nodeConfig{a, b, c}
	user, key := account(t, a, "three@example.com", credits)
	waitLeases(t, rdb, user.ID, key.Key, 1, nodes...)

	var (
		stop   atomic.Bool
		lowest atomic.Int64
		sample sync.WaitGroup
	)
	lowest.Store(nanos(t, credits))
	sample.Go(func() {
		for !stop.Load() {
			bal, held, _ := rawAccount(t, rdb, user.ID)
			if bal-held < lowest.Load() {
				lowest.Store(bal - held)
			}
		}
	})
	var ok, refused, other atomic.Int64
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			hc := &http.Client{Timeout: 20 * time.Second}
			res := chat(context.Background(), hc, nodes[i%3].siteURL(), key.Key, true,
				map[string]string{"X-Mock-Deltas": "10", "X-Mock-Delay": "20ms"})
			switch {
			case res.err == nil && res.status == http.StatusOK && res.complete:
				ok.Add(1)
			case res.status == http.StatusPaymentRequired:
				refused.Add(1)
			default:
				other.Add(1)
				t.Errorf("stream %d: status %d err %v: %s", i, res.status, res.err, res.body)
			}
		})
	}
	wg.Wait()
	stop.Store(true)
	sample.Wait()
	t.Logf("200 streams on %s over three nodes: %d served, %d refused (402), lowest balance − held %d nanos",
		credits, ok.Load(), refused.Load(), lowest.Load())
	if lowest.Load() < 0 {
		t.Errorf("balance − held went down to %d nanos: overdrawn", lowest.Load())
	}
	if ok.Load() == 0 || refused.Load() == 0 {
		t.Errorf("%d served, %d refused: the balance must bind (both > 0)", ok.Load(), refused.Load())
	}

	// Every request is in the ledger, and the balance moved by exactly
	// their costs, once no node has a settlement on its way.
	deadline := time.Now().Add(15 * time.Second)
	for {
		settling := 0
		for _, p := range procs {
			settling += inFlight(t, p.node)
		}
		reconcile(t, a) // flushes the usage stream
		cost, rows := ledgerCost(t, a, user.ID)
		bal := nanos(t, getUser(t, a, user.ID).Balance)
		if settling == 0 && bal == nanos(t, credits)-cost && rows > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("balance %d, credits − ledger costs %d (%d rows)", bal, nanos(t, credits)-cost, rows)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range procs[1:] {
		p.stop(t)
	}
	cost, _ := ledgerCost(t, a, user.ID)
	procs[0].stop(t)
	bal, held, leases := rawAccount(t, rdb, user.ID)
	if bal != nanos(t, credits)-cost || held != 0 || len(leases) != 0 {
		t.Errorf("after every node stopped: balance %d (want %d), held %d, leases %v; want nothing held, no lease",
			bal, nanos(t, credits)-cost, held, leases)
	}
}

// A debit through the ledger node, and a key's revocation, stop admission
// on every node within a second, although every node holds a lease.
func TestLeaseRecallAndRevocationReachEveryNode(t *testing.T) {
	db := newRedisDB(t)
	rdb := redisClient(db)
	defer rdb.Close()
	a := newNode(t, "A-ledger", true, db)
	b := newNode(t, "B-gateway", false, db)
	c := newNode(t, "C-gateway", false, db)
	for _, n := range []*nodeConfig{a, b, c} {
		defer startCaddy(t, n).stop(t)
	}
	nodes := []*nodeConfig{a, b, c}
	user, key := account(t, a, "recall@example.com", "100.00")
	waitLeases(t, rdb, user.ID, key.Key, 3, nodes...)

	hc := &http.Client{Timeout: 10 * time.Second}
	// refusedEverywhere polls every node until each answers want, and
	// fails if one still serves after a second.
	refusedEverywhere := func(what string, want int) {
		t.Helper()
		since := time.Now()
		for _, n := range nodes {
			for served := 0; ; served++ {
				res := chat(context.Background(), hc, n.siteURL(), key.Key, false, nil)
				if res.status == want {
					break
				}
				if res.status != http.StatusOK {
					t.Fatalf("%s: node %s answered %d: %s", what, n.name, res.status, res.body)
				}
				// The notice may still be on its way for a request or
				// two; a lease alone would serve ~10 more.
				if served >= 2 {
					t.Fatalf("%s: node %s served %d requests after it", what, n.name, served+1)
				}
				if time.Since(since) > time.Second {
					t.Fatalf("%s: node %s still admits %s after", what, n.name, time.Since(since).Round(time.Millisecond))
				}
			}
		}
		t.Logf("%s: every node refuses (%d) %s after", what, want, time.Since(since).Round(time.Microsecond))
	}

	// Debit all but 0.001: less than one request's least hold (~0.008).
	mustAdmin(t, a, "POST", "/aitoken/users/"+user.ID+"/credits", map[string]string{"amount": "-99.999", "reason": "test"}, nil, http.StatusOK)
	refusedEverywhere("admin debit", http.StatusPaymentRequired)

	// Credit it back: served again, from new leases.
	mustAdmin(t, a, "POST", "/aitoken/users/"+user.ID+"/credits", map[string]string{"amount": "99.999", "reason": "test"}, nil, http.StatusOK)
	waitLeases(t, rdb, user.ID, key.Key, 3, nodes...)
	mustAdmin(t, a, "DELETE", "/aitoken/keys/"+key.ID, nil, nil, http.StatusOK)
	refusedEverywhere("key revoked", http.StatusUnauthorized)
}

// A node killed while it holds a lease: its lease expires (lease_ttl) and
// the balance is whole again without it; when it comes back, its journal
// is replayed, each settlement once.
func TestLeasesOfAKilledNodeExpire(t *testing.T) {
	const credits = "100.00"
	db := newRedisDB(t)
	rdb := redisClient(db)
	defer rdb.Close()
	a := newNode(t, "A-ledger", true, db)
	b := newNode(t, "B-gateway", false, db)
	a.extra, b.extra = "\t\tlease_ttl 2s\n", "\t\tlease_ttl 2s\n"
	pa := startCaddy(t, a)
	defer pa.stop(t)
	pb := startCaddy(t, b)
	user, key := account(t, a, "killed@example.com", credits)
	waitLeases(t, rdb, user.ID, key.Key, 1, b)

	// Load on B, killed mid-load.
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			hc := &http.Client{Timeout: 10 * time.Second}
			for !stop.Load() {
				chat(context.Background(), hc, b.siteURL(), key.Key, true, map[string]string{"X-Mock-Deltas": "5", "X-Mock-Delay": "5ms"})
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // let the load run: not a timing assert
	pb.kill()
	stop.Store(true)
	wg.Wait()
	if _, _, leases := rawAccount(t, rdb, user.ID); len(leases) == 0 {
		t.Fatal("the killed node left no lease: nothing to expire")
	}

	// A's requests touch the account; B's lease expires under them.
	hc := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		res := chat(context.Background(), hc, a.siteURL(), key.Key, false, nil)
		if res.status != http.StatusOK {
			t.Fatalf("A: %d %s", res.status, res.body)
		}
		_, held, leases := rawAccount(t, rdb, user.ID)
		var leased int64
		for _, v := range leases {
			n, _ := strconv.ParseInt(v, 10, 64)
			leased += n
		}
		if len(leases) <= 1 && held == leased { // only A's lease, if any
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's lease never expired: held %d, leases %v", held, leases)
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkLedgerMatches := func(what string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			reconcile(t, a)
			cost, rows := ledgerCost(t, a, user.ID)
			u := getUser(t, a, user.ID)
			if bal := nanos(t, u.Balance); bal == nanos(t, credits)-cost && nanos(t, u.Held) == 0 {
				t.Logf("%s: %d rows, balance = credits − ledger costs", what, rows)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: balance %s held %s; credits − ledger costs = %d", what, u.Balance, u.Held, nanos(t, credits)-cost)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	checkLedgerMatches("B dead, its lease expired")

	// B comes back: its journal is replayed once.
	pb = startCaddy(t, b)
	defer pb.stop(t)
	checkLedgerMatches("B back, journal replayed")
	if rep := reconcile(t, a); !rep.InSync {
		t.Errorf("not in sync: %s %s", joinRaw(rep.Accounts), joinRaw(rep.Keys))
	}
}

// Redis emptied mid-load (a restart without persistence): reconcile
// rebuilds the balances from the ledger, the nodes notice their leases are
// gone and take new ones, and nothing stays held once they stop.
func TestRedisEmptiedMidLoadLeasesComeBack(t *testing.T) {
	db := newRedisDB(t)
	rdb := redisClient(db)
	defer rdb.Close()
	a := newNode(t, "A-ledger", true, db)
	b := newNode(t, "B-gateway", false, db)
	pa, pb := startCaddy(t, a), startCaddy(t, b)
	user, key := account(t, a, "emptied@example.com", "100.00")
	waitLeases(t, rdb, user.ID, key.Key, 2, a, b)

	var stop atomic.Bool
	var served, failed atomic.Int64
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			hc := &http.Client{Timeout: 10 * time.Second}
			n := []*nodeConfig{a, b}[i%2]
			for !stop.Load() {
				res := chat(context.Background(), hc, n.siteURL(), key.Key, false, nil)
				if res.status == http.StatusOK {
					served.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)                              // load before the flush: not a timing assert
	if err := rdb.FlushDB(context.Background()).Err(); err != nil { // this test's own database
		t.Fatal(err)
	}
	var rep reconcileReport
	mustAdmin(t, a, "POST", "/aitoken/reconcile?apply=true", nil, &rep, http.StatusOK)
	before := served.Load()
	// Leases come back on both nodes while the load goes on.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, l := rawAccount(t, rdb, user.ID); len(l) >= 2 && served.Load() > before+20 {
			break
		}
		if time.Now().After(deadline) {
			_, _, l := rawAccount(t, rdb, user.ID)
			t.Fatalf("after the reconcile: leases %v, %d more served", l, served.Load()-before)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d served, %d failed around the flush", served.Load(), failed.Load())
	pb.stop(t)
	reconcile(t, a)
	mustAdmin(t, a, "POST", "/aitoken/reconcile?apply=true", nil, &rep, http.StatusOK)
	pa.stop(t)
	if _, held, leases := rawAccount(t, rdb, user.ID); held != 0 || len(leases) != 0 {
		t.Errorf("after the nodes stopped: held %d, leases %v", held, leases)
	}
}
