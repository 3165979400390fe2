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
// at once. Under load, lease settlements wait for company (see linger),
// since a batch costs Redis and the gateway far less per record than a
// pipeline each, and a lease's settlements in one script far less than in
// several.
type workers struct {
	p    *Pipeline
	jobs chan job
	wg   sync.WaitGroup
	// quit is closed by stop: a lingering worker sends at once.
	quit chan struct{}
	// poke tells a lingering worker to take what is queued (see take).
	poke chan struct{}
	// gather is held by the worker gathering the next batch, so that one
	// gathers while the other applies; last is when the last batch was
	// taken (under gather).
	gather sync.Mutex
	last   time.Time
	linger time.Duration

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

// Worker sizes: workers in parallel, records per batch and per script,
// and the queue before enqueueing waits (a lingering worker takes it in
// whenever it is half full, so it fills only when both workers are busy).
const (
	workerCount = 2
	batchMax    = 8192
	scriptMax   = 256
	queueSize   = 4096
)

// linger is the least time between two batches taken while settlements
// keep coming: a lease settlement queued sooner after the last batch waits
// for the rest of it, gathering whatever else arrives, and goes in one
// batch. Nobody waits for a lease settlement: the lease accounted for its
// cost when the request was admitted, so the money other nodes may admit
// is the same before and after it is applied. Lingering costs only how
// soon Redis's balance and the usage stream show it, and buys the many
// settlements of a busy customer one script's work between them (with a
// thousand customers at a few requests a second each, a second's
// settlements carry several per lease). A settlement that releases a hold
// in Redis never lingers, and takes the lingering batch along: a
// customer's next request may need that hold back. (A variable for tests;
// a Pipeline takes it when it starts.)
var linger = time.Second

// lingering, when set (by tests), is called as a worker starts to linger.
var lingering func()

// journalSweep is how often settled records are cleared from an idle
// journal file.
const journalSweep = 5 * time.Second

func startWorkers(p *Pipeline) *workers {
	ctx, cancel := context.WithCancel(context.Background())
	w := &workers{p: p, jobs: make(chan job, queueSize),
		quit: make(chan struct{}), poke: make(chan struct{}, 1), linger: linger, cancel: cancel}
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
	if j.rec.Lease == "" || len(w.jobs) >= cap(w.jobs)/2 {
		// A hold settlement never waits; a filling queue is taken in
		// before it blocks anyone.
		select {
		case w.poke <- struct{}{}:
		default:
		}
	}
	return true
}

// stop settles what is queued, then ends the workers and the sweep.
func (w *workers) stop() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.jobs)
		close(w.quit)
		w.cancel()
	}
	w.mu.Unlock()
	w.wg.Wait()
}

func (w *workers) work() {
	var batch []job
	var timer *time.Timer
	var sc scratch
	for {
		var ok bool
		batch, ok = w.next(batch[:0], &timer)
		if len(batch) > 0 {
			w.apply(batch, &sc)
			clear(batch)
		}
		if !ok {
			return
		}
	}
}

// next gathers the next batch into batch: it waits for a job, takes what
// else has queued, and lingers when it may (see take). ok
// is false once the queue is closed and empty.
func (w *workers) next(batch []job, timer **time.Timer) (_ []job, ok bool) {
	w.gather.Lock()
	defer w.gather.Unlock()
	j, ok := <-w.jobs
	if !ok {
		return batch, false
	}
	batch = w.take(append(batch, j), nil)
	if wait := w.linger - time.Since(w.last); wait > 0 && len(batch) < batchMax && !holdsIn(batch) {
		if *timer == nil {
			*timer = time.NewTimer(wait)
		} else {
			(*timer).Reset(wait)
		}
		if lingering != nil {
			lingering()
		}
		batch = w.take(batch, (*timer).C)
		(*timer).Stop()
	}
	w.last = time.Now()
	return batch, true
}

// take adds jobs to batch, up to batchMax. With expired nil it takes
// only what is queued; otherwise it goes on until expired fires, stop is
// called or a hold settlement arrives. It does not wake for each job that
// arrives meanwhile: it takes what is queued when enqueue pokes it (a hold
// settlement came, or the queue is half full), so a busy customer's
// settlements cost the worker no wake-up each. It ends early when the
// queue closes.
func (w *workers) take(batch []job, expired <-chan time.Time) []job {
	for len(batch) < batchMax {
		select {
		case j, ok := <-w.jobs:
			if !ok {
				return batch
			}
			batch = append(batch, j)
			if j.rec.Lease == "" {
				expired = nil
			}
			continue
		default:
		}
		if expired == nil {
			return batch
		}
		select {
		case <-expired:
			expired = nil
		case <-w.quit:
			expired = nil
		case <-w.poke:
		}
	}
	return batch
}

// holdsIn reports whether batch settles a hold in Redis (a request not
// admitted from a lease).
func holdsIn(batch []job) bool {
	for _, j := range batch {
		if j.rec.Lease == "" {
			return true
		}
	}
	return false
}

// apply makes the first attempt of a batch in one pipeline: one script
// per lease for the settlements of requests admitted from it, one per
// request for the others. A record whose outcome is unknown (its reply
// lost) goes to the spool for an idempotent replay, as a lone failed
// attempt does.
func (w *workers) apply(batch []job, sc *scratch) {
	p := w.p
	ctx, cancel := context.WithTimeout(billing.WithOp(context.Background(), billing.OpSettle), attemptTimeout)
	defer cancel()
	accounts := billing.NewAccounts(p.client)
	pipe := p.client.Pipeline()
	cmds, errs := sc.take(len(batch))
	defer sc.clear()
	// A Redis that is not a cluster takes keys of any slot in one script.
	groups := [][]*leaseGroup{sc.leaseGroups(batch)}
	if !accounts.MixesShards() {
		groups = byShard(groups[0])
	}
	shards := splitScripts(groups, scriptMax)
	sent := time.Now()
	if p.hooks.Renewal != nil {
		for _, sh := range shards {
			for i := range sh.batches {
				lb := &sh.batches[i]
				lb.Renew = p.hooks.Renewal(lb.User, lb.Lease, sent)
			}
		}
	}
	// Holds first: a customer's next request may need its hold back, and
	// nobody waits on the lease settlements.
	for i, j := range batch {
		if j.rec.Lease == "" {
			cmds[i] = accounts.SettleCmd(ctx, pipe, j.rec.grant(), j.rec.Cost, j.rec.Tokens, j.rec.Usage, j.rec.mode(firstAttempt))
		}
	}
	for i, sh := range shards {
		cmds[sh.first()] = accounts.SettleLeasesCmd(ctx, pipe, sh.batches, sc.room(i))
	}
	_, _ = pipe.Exec(ctx)
	for _, sh := range shards {
		cmd := cmds[sh.first()]
		var settled []billing.LeaseSettled
		err := cmd.Err()
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			settled, err = accounts.SettleLeases(ctx, sh.batches)
		} else if err == nil {
			settled, _ = billing.LeasesSettled(cmd) // applied whatever it says
		}
		p.renewed(sh.batches, settled, sent)
		for _, g := range sh.groups {
			for _, i := range g.jobs {
				errs[i] = err
			}
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

// renewed tells the Renewed hook of the leases a settle script sent at
// sent renewed (settled is its reply for batches).
func (p *Pipeline) renewed(batches []billing.LeaseBatch, settled []billing.LeaseSettled, sent time.Time) {
	if p.hooks.Renewed == nil || len(settled) != len(batches) {
		return
	}
	for i, lb := range batches {
		if lb.Renew > 0 && settled[i].Renewed {
			p.hooks.Renewed(lb.User, lb.Lease, sent, lb.Renew)
		}
	}
}
