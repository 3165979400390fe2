package billing

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

// TestSentinelFailover runs a master, a replica and a sentinel, kills the
// master with SIGKILL and checks that Accounts on a Sentinel client (as
// the aitoken app builds it for redis_sentinel) carries on against the
// promoted replica with the keys, balances and holds it had.
func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three redis-servers and waits for a failover")
	}
	const masterName = "m"
	start := time.Now()
	master := testredis.Start(t)
	replica := testredis.StartReplica(t, master)
	sentinel := testredis.StartSentinel(t, masterName, master, testredis.SentinelConfig{
		DownAfter:       500 * time.Millisecond,
		FailoverTimeout: 2 * time.Second,
	})
	// The sentinel must know the replica and be linked to it, or it has no
	// one to promote.
	testredis.WaitSentinelReplicas(t, sentinel, masterName, 1)
	t.Logf("master, replica and sentinel ready in %s", time.Since(start).Round(time.Millisecond))

	rdb := redis.NewUniversalClient(&redis.UniversalOptions{
		MasterName: masterName,
		Addrs:      []string{sentinel.Addr},
		// A dead master refuses connections and resets reads at once; the
		// timeouts only bound a hung one. Not too short: go-redis retries a
		// command whose reply timed out, and a retried Settle debits twice.
		DialTimeout:  500 * time.Millisecond,
		ReadTimeout:  3 * time.Second,
		WriteTimeout: 3 * time.Second,
	})
	t.Cleanup(func() { _ = rdb.Close() })
	if _, ok := rdb.(*redis.Client); !ok {
		t.Fatalf("NewUniversalClient with MasterName gave %T, want a failover *redis.Client", rdb)
	}
	a := NewAccounts(rdb)
	ctx := t.Context()

	// Before the failover: a key, a credit, one settled request.
	hash := HashKey("sk-sentinel")
	if err := a.PutKey(ctx, hash, KeyRecord{ID: "k1", User: "u1", Active: true, Models: []string{"gpt-x"}}); err != nil {
		t.Fatalf("PutKey: %v", err)
	}
	credit := 10 * money.Nanos(money.NanosPerUnit)
	if _, err := a.Credit(ctx, "u1", credit); err != nil {
		t.Fatalf("Credit: %v", err)
	}
	cost1 := money.Nanos(1_250_000_000)
	authorizeSettle(t, a, hash, "before", 2*money.Nanos(money.NanosPerUnit), cost1)
	wantBal := credit - cost1
	checkBalance(t, a, wantBal)

	// Every write must be on the replica before the master dies.
	testredis.WaitReplicated(t, master, replica)
	if got, err := testredis.Do(replica.Addr, "HGET", acctKey("u1"), "balance"); err != nil || got != fmt.Sprint(int64(wantBal)) {
		t.Fatalf("replica balance = %v, %v; want %d", got, err, wantBal)
	}

	master.Kill()
	killed := time.Now()

	// Authorize through the same client until it reaches the promoted
	// replica. CheckOnly has no side effects, so a failed attempt that
	// reached Redis anyway cannot leave a hold behind.
	const failoverDeadline = 20 * time.Second
	var lastErr error
	for attempts := 1; ; attempts++ {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		g, err := a.Authorize(actx, AuthRequest{KeyHash: hash, Model: "gpt-x", CheckOnly: true})
		cancel()
		if err == nil {
			if g.User != "u1" || g.KeyID != "k1" {
				t.Fatalf("after failover Authorize = user %q key %q, want u1 k1", g.User, g.KeyID)
			}
			t.Logf("Authorize succeeded %s after the master was killed (%d attempts)",
				time.Since(killed).Round(time.Millisecond), attempts)
			break
		}
		if errors.Is(err, ErrInvalidKey) {
			// The key is gone: the data did not survive, no use waiting.
			t.Fatalf("after failover: %v (data lost)", err)
		}
		lastErr = err
		if time.Since(killed) > failoverDeadline {
			now, aerr := testredis.SentinelMasterAddr(sentinel.Addr, masterName)
			t.Fatalf("no successful Authorize %s after killing the master: last error %v; sentinel says master is %q (%v)%s",
				failoverDeadline, lastErr, now, aerr, sentinelLog(sentinel))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The promoted replica is the master now.
	if addr, err := testredis.SentinelMasterAddr(sentinel.Addr, masterName); err != nil || addr != replica.Addr {
		t.Fatalf("sentinel master = %q, %v; want the replica %s", addr, err, replica.Addr)
	}
	if info, err := testredis.Info(replica.Addr, "replication"); err != nil || info["role"] != "master" {
		t.Fatalf("replica role = %q, %v; want master", info["role"], err)
	}

	// Balance, key and usage survived; a new request holds and settles.
	checkBalance(t, a, wantBal)
	if n, err := UsageBacklog(ctx, rdb); err != nil || n != 1 {
		t.Fatalf("usage stream length = %d, %v; want 1", n, err)
	}
	cost2 := money.Nanos(750_000_000)
	authorizeSettle(t, a, hash, "after", 3*money.Nanos(money.NanosPerUnit), cost2)
	wantBal -= cost2
	checkBalance(t, a, wantBal)
	if n, err := UsageBacklog(ctx, rdb); err != nil || n != 2 {
		t.Fatalf("usage stream length = %d, %v; want 2", n, err)
	}
	t.Logf("done %s after the master was killed", time.Since(killed).Round(time.Millisecond))
}

// authorizeSettle admits one request with a hold, checks the hold is
// counted, then settles it at cost.
func authorizeSettle(t *testing.T, a *Accounts, hash, rid string, hold, cost money.Nanos) {
	t.Helper()
	ctx := t.Context()
	g, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Model: "gpt-x", Hold: hold, RequestID: rid})
	if err != nil {
		t.Fatalf("Authorize %s: %v", rid, err)
	}
	if g.User != "u1" || g.Hold != hold {
		t.Fatalf("Authorize %s = user %q hold %d; want u1, %d", rid, g.User, g.Hold, hold)
	}
	if _, held, err := a.Balance(ctx, "u1"); err != nil || held != hold {
		t.Fatalf("held during %s = %d, %v; want %d", rid, held, err, hold)
	}
	applied, err := a.Settle(ctx, g, cost, 100, []byte(`{"request_id":"`+rid+`"}`), SettleLive)
	if err != nil || !applied {
		t.Fatalf("Settle %s = %v, %v; want applied", rid, applied, err)
	}
}

func checkBalance(t *testing.T, a *Accounts, want money.Nanos) {
	t.Helper()
	bal, held, err := a.Balance(t.Context(), "u1")
	if err != nil {
		t.Fatalf("Balance: %v", err)
	}
	if bal != want || held != 0 {
		t.Fatalf("balance %d held %d; want balance %d held 0", bal, held, want)
	}
}

func sentinelLog(s *testredis.Server) string {
	masters, err := testredis.Do(s.Addr, "SENTINEL", "MASTERS")
	out := fmt.Sprintf("\nSENTINEL MASTERS: %v %v", masters, err)
	replicas, err := testredis.Do(s.Addr, "SENTINEL", "REPLICAS", "m")
	out += fmt.Sprintf("\nSENTINEL REPLICAS m: %v %v", replicas, err)
	return out + "\nsentinel log:\n" + s.LogTail(3000)
}
