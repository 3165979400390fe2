package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// Every completed test-model request reports 12 prompt and 5 completion
// tokens: (12 × 1.00 + 5 × 2.00) / 10⁶ = 0.000022 = 22000 nanos.
const completedCost = 22000

// TestKill9DuringLoadLosesNothing kills the ledger node with SIGKILL (three
// times) while 16 clients stream chats through it, restarts it on the same
// database, Redis and spool, and checks that every request a client saw complete is
// billed exactly once and that the ledger and Redis agree to the nano.
func TestKill9DuringLoadLosesNothing(t *testing.T) {
	const (
		clients      = 16
		credits      = "100.00"
		kills        = 3
		loadPerRun   = 700 * time.Millisecond
		settleWithin = 15 * time.Second
	)
	db := newRedisDB(t)
	node := newNode(t, "ledger", true, db)
	proc := startCaddy(t, node)
	rdb := redisClient(db)
	defer rdb.Close()

	type client struct {
		user userView
		key  keyView
	}
	cs := make([]client, clients)
	for i := range cs {
		cs[i].user, cs[i].key = account(t, node, fmt.Sprintf("kill%d@example.com", i), credits)
	}

	var (
		completed idSet // request ids a client saw complete (200, [DONE], clean end)
		started   idSet // request ids of every answer that had headers
		nOK       atomic.Int64
		nFail     atomic.Int64
		refused   sync.Map // status → count, for answers other than 200
	)
	// Clients stop between requests (never cancelling one in flight), so
	// the only requests cut short are those the kill cut.
	var stop atomic.Bool
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range cs {
		wg.Add(1)
		go func(c client) {
			defer wg.Done()
			hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			defer hc.CloseIdleConnections()
			mock := map[string]string{"X-Mock-Deltas": "5", "X-Mock-Delay": "5ms"}
			for !stop.Load() {
				res := chat(ctx, hc, node.siteURL(), c.key.Key, true, mock)
				if res.requestID != "" {
					started.add(res.requestID)
				}
				switch {
				case res.err == nil && res.status == http.StatusOK && res.complete:
					completed.add(res.requestID)
					nOK.Add(1)
				default:
					nFail.Add(1)
					if res.err == nil {
						v, _ := refused.LoadOrStore(res.status, new(atomic.Int64))
						v.(*atomic.Int64).Add(1)
					}
					time.Sleep(5 * time.Millisecond) // caddy is down: do not spin
				}
			}
		}(cs[i])
	}

	defer func() { // also when a check below ends the test early
		stop.Store(true)
		wg.Wait()
	}()

	// Kill the node kills times under load, restarting it each time on the
	// same database, Redis and spool directory: the later kills hit a node
	// still replaying what the previous one left pending.
	okBefore := int64(0)
	for k := 1; k <= kills; k++ {
		time.Sleep(loadPerRun)
		ok := nOK.Load()
		if ok == okBefore {
			t.Fatalf("kill %d: no request completed since the (re)start", k)
		}
		proc.kill()
		t.Logf("kill -9 #%d after %d completed requests; usage stream left behind: %s", k, ok, streamState(rdb))
		restart := time.Now()
		proc = startCaddy(t, node)
		t.Logf("caddy back %s after kill #%d", time.Since(restart).Round(time.Millisecond), k)
		okBefore = nOK.Load()
	}
	time.Sleep(loadPerRun)
	stop.Store(true)
	wg.Wait()
	if nOK.Load() == okBefore {
		t.Errorf("no request completed after the last restart")
	}
	refused.Range(func(k, v any) bool {
		t.Logf("answers with status %v: %d", k, v.(*atomic.Int64).Load())
		return true
	})
	t.Logf("load: %d completed, %d failed (connection errors while caddy was down, cut streams)", nOK.Load(), nFail.Load())

	// Let the ledger settle: wait until the node has no settlement on its
	// way, Redis and the ledger agree and the row count is stable. The
	// settlements in flight are read first in each pass: with the load
	// stopped, none can reach Redis once that reads 0, so what the pass
	// reads after it (reconcile, which flushes the stream into SQLite
	// first, then the rows) is final. Read last, it let a batch landing
	// in the middle of a pass end the wait with its debits in Redis and
	// its rows not yet listed.
	users := make([]string, len(cs))
	for i, c := range cs {
		users[i] = c.user.ID
	}
	var rows map[string][]usageRecord
	deadline := time.Now().Add(settleWithin)
	prev := -1
	for {
		settling := inFlight(t, node)
		rep := reconcile(t, node)
		rows = make(map[string][]usageRecord, len(users))
		total := 0
		for _, u := range users {
			rows[u] = usageOf(t, node, u)
			total += len(rows[u])
		}
		pending, err := ledgerPending(rdb)
		if err != nil {
			t.Fatalf("XPENDING: %v", err)
		}
		if settling == 0 && rep.InSync && total == prev && pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger did not settle within %s: in_flight=%d in_sync=%v accounts=%s rows=%d (before %d) pending=%d",
				settleWithin, settling, rep.InSync, joinRaw(rep.Accounts), total, prev, pending)
		}
		prev = total
		time.Sleep(150 * time.Millisecond)
	}

	done := completed.snapshot()
	all := started.snapshot()
	for id, n := range all {
		if n > 1 {
			t.Errorf("request id %s was answered %d times", id, n)
		}
	}

	seen := make(map[string]string) // request id → user
	var lost []string
	totalRows, billedNotCompleted := 0, 0
	outcomes := map[string]int{}
	totalHeld := 0
	for _, c := range cs {
		u := c.user.ID
		var sum int64
		for _, r := range rows[u] {
			totalRows++
			if prevUser, dup := seen[r.RequestID]; dup {
				t.Errorf("request %s has two usage rows (users %s and %s)", r.RequestID, prevUser, u)
			}
			seen[r.RequestID] = u
			if r.User != u || r.KeyID != c.key.ID || r.Model != "test-model" {
				t.Errorf("row %s: user %s key %s model %s, want %s %s test-model", r.RequestID, r.User, r.KeyID, r.Model, u, c.key.ID)
			}
			cost := nanos(t, r.Cost)
			sum += cost
			if _, ok := done[r.RequestID]; ok {
				if cost != completedCost || r.Estimated || r.Outcome != "completed" || r.InputTokens != 12 || r.OutputTokens != 5 {
					t.Errorf("completed request %s billed %+v, want cost 0.000022000, 12+5 tokens, not estimated", r.RequestID, r)
				}
			} else {
				billedNotCompleted++
				outcomes[r.Outcome+fmt.Sprintf("/estimated=%v", r.Estimated)]++
				if _, ok := all[r.RequestID]; !ok {
					t.Errorf("row %s: no client ever got this request id", r.RequestID)
				}
			}
		}

		// Money: credits − balance is exactly what the rows cost; what
		// is still held belongs to requests cut by the kill, none of
		// which has a row or completed.
		view := getUser(t, node, u)
		moved := nanos(t, credits) - nanos(t, view.Balance)
		if moved != sum {
			t.Errorf("user %s: credits − balance = %d nanos, rows cost %d nanos (difference %d)", u, moved, sum, moved-sum)
		}
		holds, err := rdb.HGetAll(context.Background(), billing.AccountKey(u, "holdamt")).Result()
		if err != nil {
			t.Fatal(err)
		}
		var heldSum int64
		for id, amt := range holds {
			n, err := strconv.ParseInt(amt, 10, 64)
			if err != nil {
				t.Fatalf("user %s: hold %s = %q: %v", u, id, amt, err)
			}
			heldSum += n
			totalHeld++
			if _, ok := done[id]; ok {
				t.Errorf("user %s: request %s completed for its client but its hold (%s nanos) was never settled", u, id, amt)
			}
			for _, r := range rows[u] {
				if r.RequestID == id {
					t.Errorf("user %s: request %s has a usage row and still a hold", u, id)
				}
			}
		}
		if got := nanos(t, view.Held); got != heldSum {
			t.Errorf("user %s: held %d nanos, holds add up to %d", u, got, heldSum)
		}
	}
	for id := range done {
		if _, ok := seen[id]; !ok {
			lost = append(lost, id)
		}
	}
	sort.Strings(lost)
	if len(lost) > 0 {
		t.Errorf("%d of %d requests that completed for their client have no usage row (lost): %s",
			len(lost), len(done), strings.Join(lost[:min(len(lost), 10)], " "))
	}
	t.Logf("ledger: %d rows for %d completed requests; %d rows for requests cut by the kill %v; %d holds left by the kill (expire after 1h)",
		totalRows, len(done), billedNotCompleted, outcomes, totalHeld)
}

func joinRaw[T ~[]byte](v []T) string {
	s := make([]string, len(v))
	for i, b := range v {
		s[i] = string(b)
	}
	return "[" + strings.Join(s, ",") + "]"
}

// streamState describes what the ledger's consumer group has not finished,
// over all usage streams: entries read but not acknowledged, and entries
// not read yet.
func streamState(rdb *redis.Client) string {
	var pending, lag int64
	for _, s := range billing.UsageStreams {
		groups, err := rdb.XInfoGroups(context.Background(), s).Result()
		if err != nil {
			return s + ": " + err.Error()
		}
		i := slices.IndexFunc(groups, func(g redis.XInfoGroup) bool { return g.Name == "ledger" })
		if i < 0 {
			return s + ": no ledger group"
		}
		pending += groups[i].Pending
		lag += groups[i].Lag
	}
	return fmt.Sprintf("%d read but not acked, %d not read yet", pending, lag)
}

// ledgerPending counts the entries of all usage streams the ledger's
// consumer group read but did not acknowledge.
func ledgerPending(rdb *redis.Client) (int64, error) {
	var n int64
	for _, s := range billing.UsageStreams {
		p, err := rdb.XPending(context.Background(), s, "ledger").Result()
		if err != nil {
			return 0, err
		}
		n += p.Count
	}
	return n, nil
}
