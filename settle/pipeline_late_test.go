package settle

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// TestSettlementAfterTheLastReleaseIsKept plays a request that outlived its
// config's drain timeout (the gateway releases its pooled connection after
// the drain timeout even with requests in flight, e.g. after a reload that
// changed the Redis URL): when it ends, its settlement must still land, now
// or at the next start, and not be dropped because the journal, client and
// spool are closed.
func TestSettlementAfterTheLastReleaseIsKept(t *testing.T) {
	const credit, cost = 1_000_000_000, 1234
	srv, _, acc, hash := fundedKey(t, "u-late", credit)
	dir := t.TempDir()
	ctx := context.Background()
	g, err := acc.Authorize(ctx, billing.AuthRequest{KeyHash: hash, Model: "m", Hold: 500_000, RequestID: "req_late1"})
	if err != nil {
		t.Fatal(err)
	}

	p, stop := startPipeline(t, srv, dir)
	stop() // the drain timeout passed: the last reference goes

	// The long request ends now.
	rec := recordOf(g)
	rec.Cost, rec.Tokens, rec.Usage = cost, 17, json.RawMessage(`{"request_id":"req_late1"}`)
	done := false
	p.Later(rec, nil, func() { done = true })
	if !done {
		t.Fatal("Later returned without calling done")
	}

	// A later start of the same Redis target must find it if it did not land.
	startPipeline(t, srv, dir)
	waitBalance(t, acc, "u-late", credit-cost, 5*time.Second,
		"the settlement of a request that outlived its config was lost")
}
