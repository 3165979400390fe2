package settle

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// maxBackoff caps the wait between failed replay attempts.
const maxBackoff = 30 * time.Second

// replayer drains a spool in the background. While entries wait it calls
// Replay every interval and whenever Kick is called; after a failed attempt
// it waits twice as long each time, up to 30s, and ignores Kick until the
// wait is over, so a Redis that is still down is not hammered.
type replayer struct {
	s        *spool
	apply    func(context.Context, spoolEntry) error
	interval time.Duration
	log      *zap.Logger
	after    func(time.Duration) <-chan time.Time // time.After; tests replace it

	kick chan struct{}
	done chan struct{}

	mu      sync.Mutex
	started bool
	stopped bool
	ctx     context.Context    // done when Stop is called
	stop    context.CancelFunc // ends the loop; Replay stops between entries
	abort   context.CancelFunc // cancels the context of an apply in flight
}

// newReplayer returns a replayer that applies the entries of s with apply. An
// interval of 0 means 1s; a nil log discards messages. Call Start to run it.
func newReplayer(s *spool, apply func(context.Context, spoolEntry) error, interval time.Duration, log *zap.Logger) *replayer {
	if interval <= 0 {
		interval = time.Second
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &replayer{
		s:        s,
		apply:    apply,
		interval: interval,
		log:      log,
		after:    time.After,
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// Start runs the replay loop in a goroutine. The first attempt is immediate,
// so entries left by an earlier run are replayed at once. Calling Start again,
// or after Stop, does nothing.
func (r *replayer) Start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.stopped {
		return
	}
	r.started = true
	r.ctx, r.stop = context.WithCancel(context.Background())
	var applyCtx context.Context
	applyCtx, r.abort = context.WithCancel(context.Background())
	go r.run(r.ctx, applyCtx)
}

// Kick asks for a replay attempt now, e.g. after Redis answered again. It
// never blocks; kicks during a backoff wait count once, when the wait ends.
func (r *replayer) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Stop ends the loop. A Replay in progress finishes the apply in flight and
// stops before the next entry; Stop waits for that. If ctx ends first, Stop
// cancels the context given to apply and returns ctx.Err() without waiting
// further. Stop makes no last attempt: entries still waiting stay in the
// spool file for the next replayer.
func (r *replayer) Stop(ctx context.Context) error {
	r.mu.Lock()
	started := r.started
	r.stopped = true
	r.mu.Unlock()
	if !started {
		return nil
	}
	r.stop()
	defer r.abort()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *replayer) run(ctx, applyCtx context.Context) {
	defer close(r.done)
	// Replay stops between entries when ctx ends; the apply in flight keeps
	// its own context so that Stop does not cut a Redis call in half.
	apply := func(_ context.Context, e spoolEntry) error { return r.apply(applyCtx, e) }
	fails := 0
	for {
		if r.s.Len() > 0 {
			n, err := r.s.Replay(ctx, apply)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				fails++
				r.log.Warn("spool replay failed; usage records stay in the spool",
					zap.Int("applied", n),
					zap.Int("waiting", r.s.Len()),
					zap.Duration("retry_in", backoff(r.interval, fails)),
					zap.Error(err))
			} else {
				fails = 0
				if n > 0 {
					r.log.Info("spool replayed", zap.Int("applied", n))
				}
			}
		} else {
			fails = 0
		}

		wait, kick := r.interval, r.kick
		if fails > 0 {
			wait, kick = backoff(r.interval, fails), nil
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-r.after(wait):
		}
	}
}

// backoff is the wait after the given number of consecutive failures:
// interval doubled each time, capped at maxBackoff (or interval, if larger).
func backoff(interval time.Duration, fails int) time.Duration {
	limit := max(maxBackoff, interval)
	d := interval
	for range fails {
		if d >= limit {
			break
		}
		d *= 2
	}
	return min(d, limit)
}
