package caddymodule

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/accounting"
)

// books returns the workflows over this node's ledger and Redis. Only the
// ledger node (a.ledger != nil) has them, once its ledger started.
func (a *App) books() *accounting.Books {
	return accounting.New(a.ledger.store, a.accounts, a.ledger.flusher, a.log)
}

// Repair of ledger entries that did not reach Redis (credits and payments a
// crash or a Redis outage left pending).
const (
	// repairInterval is how often the ledger node applies them again.
	repairInterval = 30 * time.Second
	// repairTimeout bounds the pass run at start.
	repairTimeout = 15 * time.Second
)

// repairLoop repairs every repairInterval until ctx is done.
func (a *App) repairLoop(ctx context.Context) {
	t := time.NewTicker(repairInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.repairCredits(ctx)
			a.moveLegacyUsage(ctx)
		}
	}
}

// moveLegacyUsage moves usage records that a node of an earlier version
// (one usage stream, ait:usage) wrote after Redis was moved to the current
// key layout to the streams the flusher reads, so they are not stranded.
func (a *App) moveLegacyUsage(ctx context.Context) {
	n, err := a.accounts.MoveLegacyUsage(ctx)
	if n > 0 {
		a.log.Warn("moved usage records an earlier version wrote to ait:usage: stop the nodes of earlier versions, then run caddy aitoken reconcile (their debits went to the old keys)",
			zap.Int("records", n))
	}
	if err != nil && ctx.Err() == nil {
		a.log.Warn("moving usage records from ait:usage; will retry", zap.Error(err))
	}
}

// repairCredits applies to Redis the ledger entries that did not reach it.
func (a *App) repairCredits(ctx context.Context) {
	n, err := a.books().RepairCredits(ctx)
	if n > 0 {
		a.log.Info("applied ledger entries that had not reached redis", zap.Int("entries", n))
	}
	if err != nil && ctx.Err() == nil {
		a.log.Warn("applying pending ledger entries to redis; will retry", zap.Error(err))
	}
}
