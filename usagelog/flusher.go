package usagelog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Flusher defaults and timings.
const (
	// DefaultGroup is the consumer group used when FlusherConfig.Group is empty.
	DefaultGroup = "usagelog"
	// DefaultInterval is the read block time when FlusherConfig.Interval is 0.
	DefaultInterval = time.Second
	// DefaultBatch is the batch size when FlusherConfig.Batch is 0.
	DefaultBatch = 1000

	// defaultClaimIdle is how long another consumer's entry must sit
	// unacknowledged before this flusher takes it over (its owner is
	// presumed dead); it also sets how often the flusher looks.
	defaultClaimIdle = 30 * time.Second

	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
)

// FlusherConfig configures a Flusher.
type FlusherConfig struct {
	// Streams are the Redis streams producers XADD usage records to (one
	// per shard of accounts), and Field the entry field that holds a
	// Record's JSON. Both required: the producer's layout (package
	// billing) names them. They are all read at once.
	Streams []string
	Field   string
	// BatchField, if set, is the entry field that holds several records'
	// JSON, one per line (records settled together).
	BatchField string
	// Group is the consumer group the flusher reads with. Default: "usagelog".
	Group string
	// Consumer names this reader within the group; it must be stable across
	// restarts so that the entries it had read but not stored are found
	// again. Default: the host name.
	Consumer string
	// Interval is how long one read blocks waiting for new records (they
	// are stored as soon as they arrive); between such reads the flusher
	// notices Stop and looks for idle entries. Default: 1s.
	Interval time.Duration
	// Batch is the largest number of entries read at once from one
	// stream. A read is
	// stored in one transaction, together with the reads already made
	// when the flusher lags behind (at most 4 in one transaction): a
	// commit costs far more than a row. Default: 1000.
	Batch int
	// Linger is how long the flusher lets records gather after a read that
	// did not fill a batch, so that under steady load each transaction
	// carries many rows rather than a handful. A commit costs far more than
	// a row: it rewrites every index page it touched, and the per-user
	// index has a page per active user, so rows per transaction set the
	// cost per row on a large ledger (BenchmarkInsertLargeLedger). Records
	// reach SQLite up to Linger later. Default: three quarters of Interval,
	// so that under load a record still reaches SQLite within Interval.
	Linger time.Duration
}

// Flusher reads records (FlusherConfig.Field holds the JSON of a Record) from
// Redis streams with a consumer group, inserts a batch in one SQLite transaction,
// commits, then XACKs and XDELs the entries. Crash-safe: an entry is either
// pending in the stream or in SQLite, never neither, and never stored twice
// (INSERT OR IGNORE on request_id). An entry that is not a valid Record is
// kept verbatim in the usage_rejects table and acknowledged, so it cannot
// block the stream.
type Flusher struct {
	rdb redis.UniversalClient
	s   *Store
	cfg FlusherConfig
	log *zap.Logger

	claimIdle time.Duration // tests shorten it

	batchMu sync.Mutex // one batch at a time between the loop and FlushNow

	lifeMu  sync.Mutex
	started bool
	stopped bool
	stop    chan struct{} // closed by Stop
	done    chan struct{} // closed when the loop has returned
}

// NewFlusher returns a Flusher that moves records from rdb into s. It does
// nothing until Start or FlushNow. A nil log discards messages.
func NewFlusher(rdb redis.UniversalClient, s *Store, cfg FlusherConfig, log *zap.Logger) *Flusher {
	if len(cfg.Streams) == 0 || slices.Contains(cfg.Streams, "") || cfg.Field == "" {
		panic("usagelog: FlusherConfig needs the usage streams and their record field")
	}
	cfg.Streams = slices.Clone(cfg.Streams)
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if cfg.Consumer == "" {
		cfg.Consumer, _ = os.Hostname()
		if cfg.Consumer == "" {
			cfg.Consumer = "usagelog"
		}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	// Below 1ms BLOCK would round to 0, which blocks forever.
	cfg.Interval = max(cfg.Interval, time.Millisecond)
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Linger <= 0 {
		cfg.Linger = cfg.Interval * 3 / 4
	}
	cfg.Linger = min(cfg.Linger, cfg.Interval)
	if log == nil {
		log = zap.NewNop()
	}
	return &Flusher{
		rdb:       rdb,
		s:         s,
		cfg:       cfg,
		log:       log.With(zap.String("consumer", cfg.Consumer)),
		claimIdle: defaultClaimIdle,
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
}

// Start runs the flusher in a goroutine: it creates the consumer group if
// needed (from the start of the stream, so records written before the group
// existed are not lost), stores this consumer's pending entries, and then
// new ones as they come, taking over entries other consumers left idle for
// 30s. Redis or SQLite errors are retried with a backoff of at most 1s.
// Start after Start or after Stop does nothing.
func (f *Flusher) Start() {
	f.lifeMu.Lock()
	defer f.lifeMu.Unlock()
	if f.started || f.stopped {
		return
	}
	f.started = true
	go f.run()
}

// Stop ends the loop started by Start and then drains: it stores every
// entry pending for this consumer and every entry already in the stream
// when the drain began. It returns ctx's error if ctx ends first; what was
// not drained stays in the stream for the next start.
func (f *Flusher) Stop(ctx context.Context) error {
	f.lifeMu.Lock()
	started := f.started
	if !f.stopped {
		f.stopped = true
		close(f.stop)
	}
	f.lifeMu.Unlock()
	if started {
		select {
		case <-f.done:
		case <-ctx.Done():
			return fmt.Errorf("stop flusher: %w", ctx.Err())
		}
	}
	if _, err := f.FlushNow(ctx); err != nil {
		return fmt.Errorf("stop flusher: %w", err)
	}
	return nil
}

// FlushNow makes one synchronous drain pass: this consumer's pending
// entries, then the entries in the stream when the pass began. It returns
// the number of stream entries it stored and acknowledged (records already
// in SQLite and rejected entries included).
func (f *Flusher) FlushNow(ctx context.Context) (int, error) {
	if err := f.ensureGroup(ctx); err != nil {
		return 0, err
	}
	n, err := f.drainPending(ctx)
	if err != nil {
		return n, err
	}
	m, err := f.drainNew(ctx)
	return n + m, err
}

func (f *Flusher) run() {
	defer close(f.done)
	ctx := context.Background()
	var (
		backoff     time.Duration
		needPending = true
		lastClaim   time.Time
		room        = newDecodeRoom() // kept as long as the flusher runs
	)
	for {
		select {
		case <-f.stop:
			return
		default:
		}
		err := f.step(ctx, room, &needPending, &lastClaim)
		if err == nil {
			backoff = 0
			continue
		}
		// Whatever this step had read is pending now: read it again first.
		needPending = true
		backoff = min(max(2*backoff, minBackoff), maxBackoff)
		f.log.Warn("usage flush failed, retrying", zap.Error(err), zap.Duration("backoff", backoff))
		t := time.NewTimer(backoff)
		select {
		case <-f.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// step does one round of the loop: pending entries when needed, idle
// entries of other consumers every claimIdle, then one blocking read.
func (f *Flusher) step(ctx context.Context, room *decodeRoom, needPending *bool, lastClaim *time.Time) error {
	if *needPending {
		if err := f.ensureGroup(ctx); err != nil {
			return err
		}
		if _, err := f.drainPending(ctx); err != nil {
			return err
		}
		*needPending = false
	}
	if time.Since(*lastClaim) >= f.claimIdle {
		if err := f.claimOrphans(ctx); err != nil {
			return err
		}
		*lastClaim = time.Now()
	}
	// Store new entries as they come; return when a read times out empty,
	// when Stop is called, or when it is time to look for orphans again.
	until := time.Now().Add(f.claimIdle)
	short := false
	_, err := f.pump(ctx, room, func(ctx context.Context) ([]redis.XStream, bool, error) {
		if short && !f.wait(ctx, f.cfg.Linger) {
			return nil, false, nil
		}
		select {
		case <-f.stop:
			return nil, false, nil
		default:
		}
		streams, err := f.read(ctx, ">", nil, f.cfg.Interval)
		n := entries(streams)
		short = n > 0 && n < f.cfg.Batch
		return streams, time.Now().Before(until), err
	})
	return err
}

// wait pauses for d; it reports false if Stop or ctx ended it early.
func (f *Flusher) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-f.stop:
		return false
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ensureGroup creates the consumer group (and the stream) of every stream
// where missing. A group starts at "0" so that nothing written before it
// existed is skipped.
func (f *Flusher) ensureGroup(ctx context.Context) error {
	cmds, _ := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, s := range f.cfg.Streams {
			p.XGroupCreateMkStream(ctx, s, f.cfg.Group, "0")
		}
		return nil
	})
	for _, c := range cmds {
		// Redis reports an existing group as an error reply prefixed BUSYGROUP.
		if err := c.Err(); err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
			return fmt.Errorf("create consumer group: %w", err)
		}
	}
	return nil
}

// read runs XREADGROUP on every stream from its id in after ("0" or an
// entry ID for this consumer's pending entries, ">" for new ones); nil
// after reads every stream from id. A negative block does not block. No
// entries is not an error.
func (f *Flusher) read(ctx context.Context, id string, after map[string]string, block time.Duration) ([]redis.XStream, error) {
	args := make([]string, 2*len(f.cfg.Streams))
	copy(args, f.cfg.Streams)
	for i, s := range f.cfg.Streams {
		args[len(f.cfg.Streams)+i] = id
		if a, ok := after[s]; ok {
			args[len(f.cfg.Streams)+i] = a
		}
	}
	streams, err := f.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group:    f.cfg.Group,
		Consumer: f.cfg.Consumer,
		Streams:  args,
		Count:    int64(f.cfg.Batch),
		Block:    block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read usage stream: %w", err)
	}
	return streams, nil
}

// drainPending stores this consumer's pending entries, oldest first.
func (f *Flusher) drainPending(ctx context.Context) (int, error) {
	after := make(map[string]string, len(f.cfg.Streams))
	return f.pump(ctx, nil, func(ctx context.Context) ([]redis.XStream, bool, error) {
		streams, err := f.read(ctx, "0", after, -1)
		for _, s := range streams {
			if len(s.Messages) > 0 {
				after[s.Stream] = s.Messages[len(s.Messages)-1].ID
			}
		}
		return streams, true, err
	})
}

// drainNew stores new entries up to the last one in each stream when it
// began, so that a busy producer cannot keep it going forever.
func (f *Flusher) drainNew(ctx context.Context) (int, error) {
	cmds, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, s := range f.cfg.Streams {
			p.XRevRangeN(ctx, s, "+", "-", 1)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read usage stream: %w", err)
	}
	marks := make(map[string]string, len(f.cfg.Streams))
	for i, c := range cmds {
		if last := c.(*redis.XMessageSliceCmd).Val(); len(last) > 0 {
			marks[f.cfg.Streams[i]] = last[0].ID
		}
	}
	if len(marks) == 0 {
		return 0, nil
	}
	return f.pump(ctx, nil, func(ctx context.Context) ([]redis.XStream, bool, error) {
		streams, err := f.read(ctx, ">", nil, -1)
		more := false
		for _, s := range streams {
			mark, ok := marks[s.Stream]
			if ok && len(s.Messages) > 0 && idLess(s.Messages[len(s.Messages)-1].ID, mark) {
				more = true
			}
		}
		return streams, more, err
	})
}

// claimOrphans takes over and stores the entries other consumers read but
// left unacknowledged for claimIdle.
func (f *Flusher) claimOrphans(ctx context.Context) error {
	stream, start := 0, "0-0"
	n, err := f.pump(ctx, nil, func(ctx context.Context) ([]redis.XStream, bool, error) {
		for stream < len(f.cfg.Streams) {
			name := f.cfg.Streams[stream]
			msgs, next, err := f.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
				Stream:   name,
				Group:    f.cfg.Group,
				Consumer: f.cfg.Consumer,
				MinIdle:  f.claimIdle,
				Start:    start,
				Count:    int64(f.cfg.Batch),
			}).Result()
			if err != nil {
				return nil, false, fmt.Errorf("claim idle usage entries: %w", err)
			}
			start = next
			if next == "0-0" { // the scan of this stream's pending list is complete
				stream++
			}
			if len(msgs) > 0 { // a scan step may claim nothing: go on
				return []redis.XStream{{Stream: name, Messages: msgs}}, stream < len(f.cfg.Streams), nil
			}
		}
		return nil, false, nil
	})
	if n > 0 {
		f.log.Info("stored usage entries of another consumer", zap.Int("entries", n))
	}
	return err
}
