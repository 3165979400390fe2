package settle

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// workers apply journaled records in the background. Each sends whatever
// has queued up as one pipeline, so under load many settlements share a
// Redis round trip (and its syscalls); when idle, a record goes out alone
// at once.
type workers struct {
	p    *Pipeline
	jobs chan job
	wg   sync.WaitGroup

	mu     sync.RWMutex // held for reading while enqueueing
	closed bool
	cancel context.CancelFunc // ends sweep
}

// job is one record on its way to Redis.
type job struct {
	rec    Record
	ticket ticket
	done   func()
}

// Worker sizes: workers in parallel, records per pipeline, and the queue
// before enqueueing waits. Settlements under one lease share one script
// per pipeline, so larger batches cost Redis less; a request admitted from
// a lease never waits behind them, and one that takes a hold in Redis
// waits at most one pipeline (~64 × a few µs).
const (
	workerCount = 2
	batchMax    = 64
	queueSize   = 4096
)

// journalSweep is how often settled records are cleared from an idle
// journal file.
const journalSweep = 5 * time.Second

func startWorkers(p *Pipeline) *workers {
	ctx, cancel := context.WithCancel(context.Background())
	w := &workers{p: p, jobs: make(chan job, queueSize), cancel: cancel}
	for range workerCount {
		w.wg.Go(w.work)
	}
	w.wg.Go(func() { w.sweep(ctx) })
	return w
}

// sweep empties the journal's open file whenever it is idle, until ctx
// ends.
func (w *workers) sweep(ctx context.Context) {
	t := time.NewTicker(journalSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.p.journal.TruncateIdle()
		}
	}
}

// enqueue hands j to a worker; it waits only when the queue is full. It
// reports false once the workers have stopped.
func (w *workers) enqueue(j job) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return false
	}
	w.jobs <- j
	return true
}

// stop settles what is queued, then ends the workers and the sweep.
func (w *workers) stop() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.jobs)
		w.cancel()
	}
	w.mu.Unlock()
	w.wg.Wait()
}

func (w *workers) work() {
	batch := make([]job, 0, batchMax)
	for j := range w.jobs {
		batch = append(batch[:0], j)
	more:
		for len(batch) < batchMax {
			select {
			case j, ok := <-w.jobs:
				if !ok {
					break more
				}
				batch = append(batch, j)
			default:
				break more
			}
		}
		w.apply(batch)
		clear(batch)
	}
}

// apply makes the first attempt of a batch in one pipeline: one script
// per lease for the settlements of requests admitted from it, one per
// request for the others. A record whose outcome is unknown (its reply
// lost) goes to the spool for an idempotent replay, as a lone failed
// attempt does.
func (w *workers) apply(batch []job) {
	p := w.p
	ctx, cancel := context.WithTimeout(billing.WithOp(context.Background(), billing.OpSettle), attemptTimeout)
	defer cancel()
	accounts := billing.NewAccounts(p.client)
	pipe := p.client.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	groups := leaseGroups(batch)
	for _, g := range groups {
		cmds[g.jobs[0]] = accounts.SettleLeaseCmd(ctx, pipe, g.user, g.lease, g.items)
	}
	for i, j := range batch {
		if j.rec.Lease == "" {
			cmds[i] = accounts.SettleCmd(ctx, pipe, j.rec.grant(), j.rec.Cost, j.rec.Tokens, j.rec.Usage, j.rec.mode(firstAttempt))
		}
	}
	_, _ = pipe.Exec(ctx)
	errs := make([]error, len(batch))
	for _, g := range groups {
		err := cmds[g.jobs[0]].Err()
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			_, err = accounts.SettleLease(ctx, g.user, g.lease, g.items)
		}
		for _, i := range g.jobs {
			errs[i] = err
		}
	}
	for i, j := range batch {
		err := errs[i]
		if j.rec.Lease == "" {
			err = cmds[i].Err()
			if redis.HasErrorPrefix(err, "NOSCRIPT") {
				// A Redis that lost its script cache (restart, SCRIPT
				// FLUSH) did not run it: run it again, loading the script.
				_, err = accounts.Settle(ctx, j.rec.grant(), j.rec.Cost, j.rec.Tokens, j.rec.Usage, j.rec.mode(firstAttempt))
			}
		}
		if err == nil || p.spoolFailed(j.rec, err) {
			p.journal.Done(j.ticket)
		} else {
			p.log.Error("settlement kept in the journal until the next start",
				zap.String("request_id", j.rec.RequestID))
		}
		j.done()
	}
}

// leaseGroup is the settlements of one batch under one lease.
type leaseGroup struct {
	user, lease string
	jobs        []int // indexes in the batch
	items       []billing.LeaseSettlement
}

// leaseGroups groups the batch's settlements under leases by lease.
func leaseGroups(batch []job) []*leaseGroup {
	var groups []*leaseGroup
	for i, j := range batch {
		if j.rec.Lease == "" {
			continue
		}
		var g *leaseGroup
		for _, x := range groups {
			if x.lease == j.rec.Lease && x.user == j.rec.User {
				g = x
				break
			}
		}
		if g == nil {
			g = &leaseGroup{user: j.rec.User, lease: j.rec.Lease}
			groups = append(groups, g)
		}
		g.jobs = append(g.jobs, i)
		g.items = append(g.items, j.rec.leaseSettlement())
	}
	return groups
}
