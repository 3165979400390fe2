package caddymodule

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// Retention: the ledger node deletes usage rows older than
// usage_retention and payment records older than payment_retention, once a
// day, and clears the client IP of usage rows that reached the ledger after
// their user was erased, every hour.
const (
	defaultUsageRetention   = 365 * 24 * time.Hour
	defaultPaymentRetention = 2555 * 24 * time.Hour
	// minRetention bounds both settings from below: less is a typo.
	minRetention = 24 * time.Hour
	// minPaymentRetention bounds payment_retention from below: refunds
	// and card disputes of a top-up arrive up to 120 days after it (card
	// network rules), and a top-up whose record was purged can no longer
	// be found to take its credit back.
	minPaymentRetention = 180 * 24 * time.Hour

	// retentionFirst is how long after a start the job first runs;
	// retentionTick how often it wakes up after that; retentionEvery how
	// often it deletes.
	retentionFirst = time.Minute
	retentionTick  = time.Hour
	retentionEvery = 24 * time.Hour
	// scrubWindow is how far back erasures are followed up: a usage
	// record can reach the ledger this long after its request at most
	// (streams drain within 15 minutes; spooled settlements replay as soon
	// as Redis is back).
	scrubWindow = 7 * 24 * time.Hour
)

// retentionJob is the retention work with its clock, so that tests drive
// it without waiting.
type retentionJob struct {
	store           *usagelog.Store
	usage, payments time.Duration
	// now is the clock; after makes the job's timers.
	now   func() time.Time
	after func(time.Duration) <-chan time.Time
	// last is when deleting last succeeded; shared by every config of the
	// process, so a reload does not make the job run again.
	last *retentionLast
	log  *zap.Logger
}

// retentionLast is when the retention job last deleted.
type retentionLast struct {
	mu sync.Mutex // also serialises runs, across configs
	at time.Time
}

// processRetention is the retention state of the running process.
var processRetention retentionLast

func (a *App) retentionJob() *retentionJob {
	return &retentionJob{
		store:    a.ledger.store,
		usage:    time.Duration(a.UsageRetention),
		payments: time.Duration(a.PaymentRetention),
		now:      time.Now,
		after:    time.After,
		last:     &processRetention,
		log:      a.log.Named("retention"),
	}
}

// tick does the job's periodic work at the clock's current time: the
// erasure follow-up always, the deletion when a day has passed since the
// last one that succeeded. ran tells whether it deleted.
func (j *retentionJob) tick(ctx context.Context) (res usagelog.PurgeResult, ran bool, err error) {
	j.last.mu.Lock()
	defer j.last.mu.Unlock()
	now := j.now()
	if n, err := j.store.ScrubErased(ctx, now.Add(-scrubWindow)); err != nil {
		j.log.Error("clearing client IPs of erased users", zap.Error(err))
	} else if n > 0 {
		j.log.Info("cleared client IPs of usage rows that arrived after their user was erased", zap.Int64("rows", n))
	}
	if !j.last.at.IsZero() && now.Sub(j.last.at) < retentionEvery {
		return res, false, nil
	}
	res, err = j.purge(ctx, now)
	if err != nil {
		j.log.Error("retention run failed; retrying at the next tick", zap.Error(err))
		return res, true, err
	}
	j.last.at = now
	if res.Deleted() {
		j.log.Info("retention run",
			zap.Time("usage_before", res.UsageBefore), zap.Int64("usage_rows", res.UsageRows),
			zap.Int64("rollup_entries", res.RollupEntries), zap.Int64("usage_rejects", res.Rejects),
			zap.Time("payments_before", res.PaymentsBefore), zap.Int64("payments", res.Payments))
	}
	return res, true, nil
}

// purge deletes what is past its retention at time now.
func (j *retentionJob) purge(ctx context.Context, now time.Time) (usagelog.PurgeResult, error) {
	return j.store.Purge(ctx, now.Add(-j.usage), now.Add(-j.payments), now)
}

// runRetention runs j until ctx is done: first after retentionFirst, then
// every retentionTick. Each step of a run is one transaction, so stopping
// half-way is safe.
func runRetention(ctx context.Context, j *retentionJob) {
	wait := retentionFirst
	for {
		select {
		case <-ctx.Done():
			return
		case <-j.after(wait):
		}
		wait = retentionTick
		_, _, _ = j.tick(ctx)
	}
}
