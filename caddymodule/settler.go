package caddymodule

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/journal"
)

// settler applies journaled settlements in the background. Its workers
// send whatever has queued up as one pipeline, so under load many
// settlements share a Redis round trip (and its syscalls); when idle, a
// settlement goes out alone at once.
type settler struct {
	conn *redisConn
	log  *zap.Logger
	jobs chan settleJob
	wg   sync.WaitGroup

	mu     sync.RWMutex // held for reading while enqueueing
	closed bool
	quit   chan struct{} // closed by stop: ends sweep
}

// settleJob is one settlement on its way to Redis.
type settleJob struct {
	s      spooled
	ticket journal.Ticket
	done   func()
}

// Settler sizes: workers in parallel, settlements per pipeline, and the
// queue before enqueueing waits. Redis runs a client's pipeline to its end
// before serving others, and each settle script takes ~20µs there, so a
// small batch bounds how long a request's authorize can wait behind one.
const (
	settleWorkers  = 4
	settleBatchMax = 8
	settleQueue    = 4096
)

func newSettler(c *redisConn, log *zap.Logger) *settler {
	st := &settler{conn: c, log: log, jobs: make(chan settleJob, settleQueue), quit: make(chan struct{})}
	for range settleWorkers {
		st.wg.Go(st.work)
	}
	st.wg.Go(st.sweep)
	return st
}

// journalSweep is how often settled records are cleared from an idle
// journal file.
const journalSweep = 5 * time.Second

// sweep empties the journal's open file whenever it is idle, until stop.
func (st *settler) sweep() {
	t := time.NewTicker(journalSweep)
	defer t.Stop()
	for {
		select {
		case <-st.quit:
			return
		case <-t.C:
			st.conn.journal.TruncateIdle()
		}
	}
}

// enqueue hands j to a worker; it waits only when the queue is full. It
// reports false once the settler has stopped.
func (st *settler) enqueue(j settleJob) bool {
	st.mu.RLock()
	defer st.mu.RUnlock()
	if st.closed {
		return false
	}
	st.jobs <- j
	return true
}

// stop settles what is queued, then ends the workers.
func (st *settler) stop() {
	st.mu.Lock()
	if !st.closed {
		st.closed = true
		close(st.jobs)
		close(st.quit)
	}
	st.mu.Unlock()
	st.wg.Wait()
}

func (st *settler) work() {
	batch := make([]settleJob, 0, settleBatchMax)
	for j := range st.jobs {
		batch = append(batch[:0], j)
	more:
		for len(batch) < settleBatchMax {
			select {
			case j, ok := <-st.jobs:
				if !ok {
					break more
				}
				batch = append(batch, j)
			default:
				break more
			}
		}
		st.apply(batch)
		clear(batch)
	}
}

// apply settles a batch in one pipeline. A settlement whose outcome is
// unknown (its reply lost) goes to the spool in its idempotent mode, as a
// lone failed settlement does.
func (st *settler) apply(batch []settleJob) {
	ctx, cancel := context.WithTimeout(withRedisOp(context.Background(), opSettle), settleTimeout)
	defer cancel()
	accounts := billing.NewAccounts(st.conn.client)
	pipe := st.conn.client.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, j := range batch {
		cmds[i] = accounts.SettleCmd(ctx, pipe, j.s.Grant, j.s.Cost, j.s.Tokens, j.s.Record, firstMode(j.s.Grant))
	}
	_, _ = pipe.Exec(ctx)
	for i, j := range batch {
		err := cmds[i].Err()
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			// A Redis that lost its script cache (restart, SCRIPT FLUSH)
			// did not run it: run it again, loading the script.
			_, err = accounts.Settle(ctx, j.s.Grant, j.s.Cost, j.s.Tokens, j.s.Record, firstMode(j.s.Grant))
		}
		if err == nil || st.conn.spoolFailed(j.s, err, st.log) {
			st.conn.journal.Done(j.ticket)
		} else {
			st.log.Error("settlement kept in the journal until the next start",
				zap.String("request_id", j.s.Grant.RequestID))
		}
		j.done()
	}
}
