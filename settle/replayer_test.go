package settle

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// fakeClock replaces time.After: it reports every wait the replayer asks for
// and fires only when the test says so.
type fakeClock struct {
	waits chan time.Duration
	tick  chan time.Time
}

func newFakeClock(r *replayer) *fakeClock {
	c := &fakeClock{waits: make(chan time.Duration, 100), tick: make(chan time.Time)}
	r.after = func(d time.Duration) <-chan time.Time {
		c.waits <- d
		return c.tick
	}
	return c
}

func (c *fakeClock) expectWait(t *testing.T, want time.Duration) {
	t.Helper()
	if got := <-c.waits; got != want {
		t.Fatalf("wait = %v, want %v", got, want)
	}
}

func stopT(t *testing.T, r *replayer) {
	t.Helper()
	if err := r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestReplayerKick(t *testing.T) {
	s := openSpoolT(t, filepath.Join(t.TempDir(), "spool"))
	applied := make(chan string, 10)
	r := newReplayer(s, func(_ context.Context, e spoolEntry) error {
		applied <- e.ID
		return nil
	}, 0, nil)
	clock := newFakeClock(r)
	r.Start()
	clock.expectWait(t, time.Second) // idle: nothing to replay, default interval

	appendT(t, s, 0, 3)
	r.Kick()
	var got []string
	for range 3 {
		got = append(got, <-applied)
	}
	if !slices.Equal(got, ids(0, 3)) {
		t.Fatalf("applied %v", got)
	}
	clock.expectWait(t, time.Second)
	stopT(t, r)
	if s.Len() != 0 {
		t.Fatalf("Len = %d", s.Len())
	}
}

func TestReplayerBackoff(t *testing.T) {
	s := openSpoolT(t, filepath.Join(t.TempDir(), "spool"))
	appendT(t, s, 0, 3)

	const fails = 6
	calls := 0
	var got []string
	r := newReplayer(s, func(_ context.Context, e spoolEntry) error {
		calls++
		if calls <= fails {
			return errors.New("redis down")
		}
		got = append(got, e.ID)
		return nil
	}, 2*time.Second, nil)
	clock := newFakeClock(r)
	r.Start() // first attempt right away: entries are waiting

	for _, want := range []time.Duration{4, 8, 16, 30, 30, 30} {
		clock.expectWait(t, want*time.Second)
		r.Kick() // ignored until the backoff wait is over
		clock.tick <- time.Time{}
	}
	// The seventh attempt succeeds; back to the normal interval, and the
	// kick left from the backoff runs one more (empty) round.
	clock.expectWait(t, 2*time.Second)
	stopT(t, r)

	if calls != fails+3 || !slices.Equal(got, ids(0, 3)) {
		t.Fatalf("calls %d, applied %v", calls, got)
	}
	if s.Len() != 0 {
		t.Fatalf("Len = %d", s.Len())
	}
}

func TestReplayerStopWaitsForApplyInFlight(t *testing.T) {
	s := openSpoolT(t, filepath.Join(t.TempDir(), "spool"))
	appendT(t, s, 0, 3)
	inFlight, release := make(chan struct{}), make(chan struct{})
	var applyErr error
	r := newReplayer(s, func(ctx context.Context, e spoolEntry) error {
		close(inFlight)
		<-release
		applyErr = ctx.Err()
		return nil
	}, time.Hour, nil)
	r.Start()
	<-inFlight
	stopped := make(chan error)
	go func() { stopped <- r.Stop(context.Background()) }()
	<-r.ctx.Done() // Stop has signalled the loop
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	// The apply in flight kept a live context and counted; the replay
	// stopped before the next entry.
	if applyErr != nil || s.Len() != 2 {
		t.Fatalf("apply ctx err %v, Len %d", applyErr, s.Len())
	}
}

func TestReplayerStopDeadlineAbortsApply(t *testing.T) {
	s := openSpoolT(t, filepath.Join(t.TempDir(), "spool"))
	appendT(t, s, 0, 1)
	inFlight, aborted := make(chan struct{}), make(chan struct{})
	r := newReplayer(s, func(ctx context.Context, e spoolEntry) error {
		close(inFlight)
		<-ctx.Done()
		close(aborted)
		return ctx.Err()
	}, time.Hour, nil)
	r.Start()
	<-inFlight
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Stop(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop = %v", err)
	}
	<-aborted
	<-r.done
	if s.Len() != 1 {
		t.Fatalf("Len = %d, the failed entry must stay", s.Len())
	}
}

func TestReplayerStopWithoutStart(t *testing.T) {
	s := openSpoolT(t, filepath.Join(t.TempDir(), "spool"))
	r := newReplayer(s, func(context.Context, spoolEntry) error { return nil }, 0, nil)
	stopT(t, r)
	r.Start() // after Stop: no-op
	stopT(t, r)
}

func TestBackoffDoublesToACap(t *testing.T) {
	for _, c := range []struct {
		interval time.Duration
		fails    int
		want     time.Duration
	}{
		{time.Second, 1, 2 * time.Second},
		{time.Second, 4, 16 * time.Second},
		{time.Second, 5, 30 * time.Second},
		{time.Second, 1000, 30 * time.Second},
		{time.Minute, 3, time.Minute},
	} {
		if got := backoff(c.interval, c.fails); got != c.want {
			t.Errorf("backoff(%v, %d) = %v, want %v", c.interval, c.fails, got, c.want)
		}
	}
}
