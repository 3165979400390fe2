package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestTwoNodesOneLedger runs a ledger node A and a gateway-only node B on
// one Redis: requests through either are billed into A's ledger exactly,
// and a key revoked through A is refused by B within a second.
func TestTwoNodesOneLedger(t *testing.T) {
	const (
		perNode  = 20
		credits  = "100.00" // each request without max_tokens holds up to its whole cost (0.52)
		revokeIn = time.Second
	)
	db := newRedisDB(t)
	a := newNode(t, "A-ledger", true, db)
	b := newNode(t, "B-gateway", false, db)
	startCaddy(t, a)
	startCaddy(t, b)

	// B has no ledger: its aitoken admin routes answer 503.
	if st := adminDo(t, b, "GET", "/aitoken/users/nobody", nil, nil); st != http.StatusServiceUnavailable {
		t.Errorf("B GET /aitoken/users/nobody: %d, want 503 (no ledger on a gateway node)", st)
	}
	if st := adminDo(t, b, "POST", "/aitoken/users", map[string]string{"email": "b@example.com"}, nil); st != http.StatusServiceUnavailable {
		t.Errorf("B POST /aitoken/users: %d, want 503", st)
	}

	user, key := account(t, a, "two@example.com", credits)

	// perNode requests through each node, streams and plain answers mixed,
	// four at a time per node.
	var (
		mu  sync.Mutex
		ids = map[string]string{} // request id → node
	)
	hc := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for _, n := range []*nodeConfig{a, b} {
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < perNode; i += 4 {
					res := chat(context.Background(), hc, n.siteURL(), key.Key, i%2 == 0, map[string]string{"X-Mock-Deltas": "5"})
					if res.err != nil || res.status != http.StatusOK || !res.complete || res.requestID == "" {
						t.Errorf("node %s request %d: status %d err %v complete %v id %q: %s",
							n.name, i, res.status, res.err, res.complete, res.requestID, res.body)
						continue
					}
					mu.Lock()
					ids[res.requestID] = n.name
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if len(ids) != 2*perNode {
		t.Fatalf("%d distinct request ids for %d requests", len(ids), 2*perNode)
	}

	rows := waitRows(t, a, user.ID, len(ids))
	checkRows(t, rows, ids, key.ID)
	checkMoney(t, a, user.ID, credits, int64(len(ids))*completedCost)

	// Revoke through A; B must refuse the key within a second.
	mustAdmin(t, a, "DELETE", "/aitoken/keys/"+key.ID, nil, nil, http.StatusOK)
	revoked := time.Now()
	var took time.Duration
	for {
		res := chat(context.Background(), hc, b.siteURL(), key.Key, false, nil)
		if res.err != nil {
			t.Fatalf("B after revocation: %v", res.err)
		}
		if res.status == http.StatusUnauthorized {
			took = time.Since(revoked)
			var e struct {
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(res.body, &e); err != nil || e.Error.Code != "invalid_api_key" {
				t.Errorf("B refusal body %s, want code invalid_api_key", res.body)
			}
			break
		}
		if res.status == http.StatusOK && res.complete {
			ids[res.requestID] = b.name // served before the revocation reached B: billed
		} else {
			t.Fatalf("B after revocation: status %d: %s", res.status, res.body)
		}
		if time.Since(revoked) > revokeIn {
			t.Fatalf("B still serves the key %s after its revocation through A", time.Since(revoked).Round(time.Millisecond))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("B refused the revoked key %s after the DELETE", took.Round(time.Microsecond))
	if res := chat(context.Background(), hc, a.siteURL(), key.Key, false, nil); res.status != http.StatusUnauthorized {
		t.Errorf("A after revocation: status %d, want 401", res.status)
	}

	// Refusals are not billed: the ledger holds exactly the served requests.
	rows = waitRows(t, a, user.ID, len(ids))
	checkRows(t, rows, ids, key.ID)
	checkMoney(t, a, user.ID, credits, int64(len(ids))*completedCost)
	if rep := reconcile(t, a); !rep.InSync {
		t.Errorf("reconcile after the test: not in sync: accounts %s keys %s", joinRaw(rep.Accounts), joinRaw(rep.Keys))
	}
}

// waitRows polls the ledger until the user has want usage rows (reconcile
// flushes the usage stream first), and fails after 5s or on more rows.
func waitRows(t *testing.T, ledger *nodeConfig, user string, want int) []usageRecord {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		reconcile(t, ledger)
		rows := usageOf(t, ledger, user)
		if len(rows) > want {
			t.Fatalf("user %s: %d usage rows, want %d", user, len(rows), want)
		}
		if len(rows) == want {
			return rows
		}
		if time.Now().After(deadline) {
			t.Fatalf("user %s: %d usage rows after 5s, want %d", user, len(rows), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkRows checks that rows are exactly the requests in ids, each billed
// as a completed test-model request on keyID.
func checkRows(t *testing.T, rows []usageRecord, ids map[string]string, keyID string) {
	t.Helper()
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.RequestID] {
			t.Errorf("request %s has two rows", r.RequestID)
		}
		seen[r.RequestID] = true
		if _, ok := ids[r.RequestID]; !ok {
			t.Errorf("row %s is no request a client made", r.RequestID)
		}
		if r.KeyID != keyID || r.Model != "test-model" || r.Outcome != "completed" || r.Estimated ||
			r.InputTokens != 12 || r.OutputTokens != 5 || nanos(t, r.Cost) != completedCost {
			t.Errorf("row %s (via %s): %+v, want a completed test-model row costing 0.000022000", r.RequestID, ids[r.RequestID], r)
		}
	}
	for id, node := range ids {
		if !seen[id] {
			t.Errorf("request %s via %s has no usage row", id, node)
		}
	}
}

// checkMoney checks that the balance moved by exactly want nanos and that
// nothing is held any more.
func checkMoney(t *testing.T, ledger *nodeConfig, user, credits string, want int64) {
	t.Helper()
	u := getUser(t, ledger, user)
	if moved := nanos(t, credits) - nanos(t, u.Balance); moved != want {
		t.Errorf("user %s: balance moved %d nanos, rows cost %d", user, moved, want)
	}
	if nanos(t, u.Held) != 0 {
		t.Errorf("user %s: %s still held after every request ended", user, u.Held)
	}
}
