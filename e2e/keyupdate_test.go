package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestKeyUpdateSeenByOtherNode: a key changed through the ledger node's
// admin API (PATCH /aitoken/keys/{id}) is applied by a gateway node at its
// next request, and changed back the same way.
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
	mustAdmin(t, a, "PATCH", "/aitoken/keys/"+key.ID, map[string]any{"allowed_ips": []string{"192.0.2.0/24"}}, nil, http.StatusOK)
	if st := status(); st != http.StatusForbidden {
		t.Errorf("B after allowed_ips left out loopback: %d, want 403", st)
	}
	mustAdmin(t, a, "PATCH", "/aitoken/keys/"+key.ID, map[string]any{"allowed_ips": []string{}}, nil, http.StatusOK)
	if st := status(); st != http.StatusOK {
		t.Errorf("B after allowed_ips was emptied: %d, want 200", st)
	}
}
