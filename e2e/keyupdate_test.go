package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestKeyUpdateSeenByOtherNode: a key changed through the ledger node's
// admin API (PATCH /aitoken/keys/{id}) is applied by a gateway node within
// a second (the change notice drops the node's copy of the key), and
// changed back the same way.
func TestKeyUpdateSeenByOtherNode(t *testing.T) {
	db := newRedisDB(t)
	a := newNode(t, "A-ledger", true, db)
	b := newNode(t, "B-gateway", false, db)
	startCaddy(t, a)
	startCaddy(t, b)
	_, key := account(t, a, "update@example.com", "1.00")
	hc := &http.Client{Timeout: 10 * time.Second}
	status := func() int {
		return chat(context.Background(), hc, b.siteURL(), key.Key, false, nil).status
	}
	if st := status(); st != http.StatusOK {
		t.Fatalf("B before the update: %d", st)
	}
	// seen waits until B answers want, for at most a second.
	seen := func(what string, want int) {
		t.Helper()
		since := time.Now()
		for {
			st := status()
			if st == want {
				t.Logf("B: %s seen after %s", what, time.Since(since).Round(time.Microsecond))
				return
			}
			if time.Since(since) > time.Second {
				t.Fatalf("B %s: still %d after a second, want %d", what, st, want)
			}
		}
	}
	mustAdmin(t, a, "PATCH", "/aitoken/keys/"+key.ID, map[string]any{"allowed_ips": []string{"192.0.2.0/24"}}, nil, http.StatusOK)
	seen("allowed_ips leaving out loopback", http.StatusForbidden)
	mustAdmin(t, a, "PATCH", "/aitoken/keys/"+key.ID, map[string]any{"allowed_ips": []string{}}, nil, http.StatusOK)
	seen("allowed_ips emptied", http.StatusOK)
}
