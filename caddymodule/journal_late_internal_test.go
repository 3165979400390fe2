package caddymodule

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// TestSettlementAfterTheLastReleaseIsKept plays a request that outlived its
// config's drain timeout (App.Cleanup releases the pooled connection after
// drainTimeout even with requests in flight, e.g. after a reload that changed
// the Redis URL): when it ends, its settlement must still land, now or at the
// next start, and not be dropped because the journal, client and spool are
// closed.
func TestSettlementAfterTheLastReleaseIsKept(t *testing.T) {
	const credit, cost = 1_000_000_000, 1234
	srv, _, acc, hash := fundedKey(t, "u-late", credit)
	dir := t.TempDir()
	ctx := context.Background()
	g, err := acc.Authorize(ctx, billing.AuthRequest{KeyHash: hash, Model: "m", Hold: 500_000, RequestID: "req_late1"})
	if err != nil {
		t.Fatal(err)
	}

	rc, err := acquireRedis(srv.URL(), nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.start(); err != nil {
		t.Fatal(err)
	}
	rc.release() // the drain timeout passed: the last reference goes

	// The long request ends now.
	rc.settleLater(spooled{Grant: g, Cost: cost, Tokens: 17, Record: json.RawMessage(`{"request_id":"req_late1"}`)},
		new(tracker), zap.NewNop(), nil)

	// A later start of the same Redis target must find it if it did not land.
	rc2, err := acquireRedis(srv.URL(), nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer rc2.release()
	if err := rc2.start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		bal, held, err := acc.Balance(ctx, "u-late")
		if err != nil {
			t.Fatal(err)
		}
		if bal == credit-cost && held == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("balance %d held %d: the settlement of a request that outlived its config was lost (want balance %d, held 0)",
				bal, held, credit-cost)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
