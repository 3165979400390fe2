package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/cnaitoken/caddy-aitoken/accounting"
	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/journal"
	"github.com/cnaitoken/caddy-aitoken/spool"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// pool holds what must outlive one config: Redis clients keyed by URL and
// ledgers keyed by database path, so a reload reuses them.
var pool = caddy.NewUsagePool()

// redisConn is a pooled Redis client. Building one touches nothing:
// the client dials on first use, and the spool, journal and background
// workers are opened by start, when a config using the connection starts
// (`caddy validate` only provisions).
type redisConn struct {
	key      string
	url      string
	sentinel *SentinelConfig
	client   redis.UniversalClient
	// keys caches key records for on_redis_error allow.
	keys *keyCache
	log  *zap.Logger

	spoolFile     string
	journalDir    string
	journalPrefix string

	// mu guards start and Destruct; ready is set once start succeeded,
	// and only then are the fields below in use.
	mu     sync.Mutex
	ready  atomic.Bool
	closed bool
	cancel context.CancelFunc // ends the revocation listener
	// spool keeps settlements Redis could not take; replayer retries them.
	spool    *spool.Spool
	replayer *spool.Replayer
	// journal holds settlements from the end of their response until
	// Redis (or the spool) has them; settler applies them.
	journal *journal.Journal
	settler *settler
}

// settle applies a settlement, or spools it when Redis cannot take it. It
// reports false when the settlement is in neither (the spool failed too).
func (c *redisConn) settle(ctx context.Context, s spooled, log *zap.Logger) bool {
	_, err := billing.NewAccounts(c.client).Settle(withRedisOp(ctx, opSettle), s.Grant, s.Cost, s.Tokens, s.Record, firstMode(s.Grant))
	return err == nil || c.spoolFailed(s, err, log)
}

// firstMode is the mode of a settlement's first attempt. It debits even
// when Redis lost the hold (a restart without persistence): the client
// lets no command retry, so it runs at most once. Spooled replays use the
// idempotent Grant.Mode instead: they may follow a first attempt that
// applied but whose reply was lost.
func firstMode(g billing.Grant) billing.SettleMode {
	if g.NoHold {
		return billing.SettleReplayNoHold
	}
	return billing.SettleLive
}

// spoolFailed keeps a settlement whose attempt failed with err in the
// spool for replay. It reports false when the spool failed too.
func (c *redisConn) spoolFailed(s spooled, err error, log *zap.Logger) bool {
	log.Warn("settling in redis failed; spooling it for replay",
		zap.String("request_id", s.Grant.RequestID), zap.Error(err))
	s.Mode = s.Grant.Mode()
	if err := c.spool.Append(spool.Entry{ID: s.Grant.RequestID, Payload: s.appendJSON(nil)}); err != nil {
		log.Error("cannot spool settlement", zap.String("request_id", s.Grant.RequestID), zap.Error(err))
		return false
	}
	metrics.spooled.Inc()
	c.replayer.Kick()
	return true
}

// settleLater writes s ahead to the journal and leaves it to the settler,
// so the response ends without waiting for Redis; a process killed before
// the settlement lands replays it from the journal at its next start.
// Without a journal it settles at once.
//
// ahead, if not nil, runs once the settlement is safe in the journal and
// before it is handed over: the handler flushes the response there, so the
// client has it before anything else happens.
func (c *redisConn) settleLater(s spooled, t *tracker, log *zap.Logger, ahead func()) {
	s.Mode = s.Grant.Mode() // what a replay from the journal must use
	buf := journalBufs.Get().(*[]byte)
	defer journalBufs.Put(buf)
	*buf = s.appendJSON((*buf)[:0])
	ticket, err := c.journal.Append(*buf)
	if err == nil && ahead != nil {
		ahead()
	}
	if err == nil {
		t.begin()
		if c.settler.enqueue(settleJob{s: s, ticket: ticket, done: t.end}) {
			return
		}
		defer t.end()
	} else {
		log.Warn("journal unavailable; settling before the response ends",
			zap.String("request_id", s.Grant.RequestID), zap.Error(err))
	}
	// A request that outlived its config's drain timeout: the connection
	// may be closed. Settle now, or leave the settlement for the next start.
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	switch {
	case c.settle(ctx, s, log):
		if err == nil {
			c.journal.Done(ticket)
		}
	case err == nil:
		// It is in the journal, not Done: the next start settles it.
	default:
		if lerr := journal.WriteLeftover(c.journalDir, c.journalPrefix, *buf); lerr != nil {
			metrics.lost.Inc()
			log.Error("usage record lost: cannot settle, spool or journal it",
				zap.String("request_id", s.Grant.RequestID), zap.String("user", s.Grant.User),
				zap.String("cost", s.Cost.String()), zap.Error(lerr))
		}
	}
}

// journalBufs holds the buffers settlements are encoded into.
var journalBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// start opens the spool and the settlement journal, takes up what stopped
// processes left (journal leftovers into the spool), and starts the
// settlement workers, the spool replayer and the revocation listener. It
// runs once, when the first config using the connection starts or serves
// a request; a failed start is tried again next time.
func (c *redisConn) start() error {
	if c.ready.Load() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ready.Load() {
		return nil
	}
	if c.closed {
		return errors.New("redis connection already closed")
	}
	sp, err := spool.Open(c.spoolFile)
	if err != nil {
		return fmt.Errorf("spool: %v", err)
	}
	jr, err := journal.Open(c.journalDir, c.journalPrefix)
	if err != nil {
		_ = sp.Close()
		return fmt.Errorf("settlement journal: %v", err)
	}
	c.spool, c.journal = sp, jr
	c.replayer = spool.NewReplayer(sp, c.replay, time.Second, c.log.Named("spool"))
	c.settler = newSettler(c, c.log)
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.keys.listenRevocations(ctx, c.client, c.log)
	if err := c.recoverJournal(c.log.Named("journal")); err != nil {
		// They stay in the journal for the next start.
		c.log.Error("recovering settlements from the journal", zap.Error(err))
	}
	if !c.journal.Owner() {
		c.log.Error("another process uses this spool directory: it keeps its own journal and spool; " +
			"give each process its own spool_dir")
	}
	c.replayer.Start()
	c.ready.Store(true)
	return nil
}

// recoverJournal moves the settlements a stopped process left in the
// journal to the spool, whose replayer applies them idempotently.
func (c *redisConn) recoverJournal(log *zap.Logger) error {
	recs, err := c.journal.Leftovers()
	if err != nil {
		return err
	}
	for _, rec := range recs {
		var s spooled
		if err := json.Unmarshal(rec, &s); err != nil || s.Grant.RequestID == "" {
			log.Error("unreadable settlement in the journal; skipped", zap.Int("bytes", len(rec)))
			continue
		}
		if err := c.spool.Append(spool.Entry{ID: s.Grant.RequestID, Payload: rec}); err != nil {
			return err
		}
	}
	if len(recs) > 0 {
		log.Info("settlements left in the journal by a stopped process spooled for replay", zap.Int("settlements", len(recs)))
	}
	return c.journal.DropLeftovers()
}

// replay applies one spooled settlement.
func (c *redisConn) replay(ctx context.Context, e spool.Entry) error {
	var s spooled
	if err := json.Unmarshal(e.Payload, &s); err != nil {
		return nil // unreadable entries cannot succeed later either
	}
	_, err := billing.NewAccounts(c.client).Settle(ctx, s.Grant, s.Cost, s.Tokens, s.Record, s.Mode)
	return err
}

// spoolPath is where settlements for one Redis target wait.
func spoolPath(dir, key string) string {
	if dir == "" {
		dir = filepath.Join(caddy.AppDataDir(), "aitoken")
	}
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(dir, "spool-"+hex.EncodeToString(sum[:8])+".jsonl")
}

// journalPrefix names the settlement journal files next to the spool.
func journalPrefix(spoolPath string) string {
	return "journal-" + strings.TrimSuffix(strings.TrimPrefix(filepath.Base(spoolPath), "spool-"), ".jsonl")
}

// Redis timeouts: nothing on the request path may hang on a stalled Redis.
const (
	redisDialTimeout = 2 * time.Second
	redisIOTimeout   = time.Second
)

func acquireRedis(url string, sentinel *SentinelConfig, spoolDir string) (*redisConn, error) {
	key := "redis|" + url
	var sentinelPassword string
	if sentinel != nil {
		var err error
		sentinelPassword, err = caddy.NewReplacer().ReplaceOrErr(sentinel.Password, true, true)
		if err != nil {
			return nil, fmt.Errorf("redis_sentinel password: %v", err)
		}
		key += "|sentinel|" + sentinel.Master + "|" + strings.Join(sentinel.Addrs, ",")
	}
	v, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) {
		opt, err := redis.ParseURL(url)
		if err != nil {
			// The URL may hold a password: never echo it.
			return nil, fmt.Errorf("redis: invalid URL: check scheme (redis:// or rediss://), host and database number")
		}
		uo := &redis.UniversalOptions{
			Addrs:       []string{opt.Addr},
			DB:          opt.DB,
			Username:    opt.Username,
			Password:    opt.Password,
			TLSConfig:   opt.TLSConfig,
			DialTimeout: redisDialTimeout,
			// No automatic retries: a retried settlement whose first
			// reply was lost would debit twice. Failures answer 503 or
			// go to the spool instead.
			MaxRetries:   -1,
			ReadTimeout:  redisIOTimeout,
			WriteTimeout: redisIOTimeout,
		}
		// One dial per attempt: go-redis otherwise dials 5 times, each
		// with the whole DialTimeout, so an unreachable host would hold a
		// request for 2 attempts × 5 dials × 2s before its 503.
		uo.DialerRetries = 1
		if sentinel != nil {
			uo.MasterName = sentinel.Master
			uo.Addrs = sentinel.Addrs
			uo.SentinelPassword = sentinelPassword
		}
		sp := spoolPath(spoolDir, key)
		client := redis.NewUniversalClient(uo)
		client.AddHook(redisHook{})
		return &redisConn{key: key, url: url, sentinel: sentinel, client: client, keys: newKeyCache(),
			spoolFile: sp, journalDir: filepath.Dir(sp), journalPrefix: journalPrefix(sp),
			log: caddy.Log().Named("aitoken")}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*redisConn), nil
}

// Destruct stops what start started and closes the client once no config
// uses it.
func (c *redisConn) Destruct() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.ready.Load() {
		c.cancel()
		c.settler.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.replayer.Stop(ctx)
		_ = c.journal.Close()
		_ = c.spool.Close()
	}
	return c.client.Close()
}

func (c *redisConn) release() { _, _ = pool.Delete(c.key) }

// ledgerGroup is the usage stream's consumer group that feeds the ledger.
const ledgerGroup = "ledger"

// ledgerConn is a pooled SQLite ledger and the flusher feeding it.
// Building one touches nothing; start opens (or creates) the database,
// seeds Redis from it if Redis has lost its data, and starts the flusher.
type ledgerConn struct {
	key      string
	path     string
	interval time.Duration
	redis    *redisConn // the flusher's own reference
	log      *zap.Logger

	// mu guards start and Destruct; ready is set once start succeeded,
	// and only then are store and flusher in use.
	mu      sync.Mutex
	ready   atomic.Bool
	closed  bool
	store   *usagelog.Store
	flusher *usagelog.Flusher
}

func acquireLedger(path string, rc *redisConn, interval time.Duration, log *zap.Logger) (*ledgerConn, error) {
	key := "ledger|" + path + "|" + rc.key
	v, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) {
		// The flusher keeps its own reference to the Redis client, so the
		// client outlives the final drain.
		own, err := acquireRedis(rc.url, rc.sentinel, "")
		if err != nil {
			return nil, err
		}
		return &ledgerConn{key: key, path: path, interval: interval, redis: own, log: log}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*ledgerConn), nil
}

// start opens the ledger, seeds Redis from it when Redis has no accounts,
// and starts the flusher. It runs once, when the first config using the
// ledger starts or serves a request; a failed start is tried again next
// time. An unreachable Redis fails it.
func (l *ledgerConn) start() error {
	if l.ready.Load() {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ready.Load() {
		return nil
	}
	if l.closed {
		return errors.New("ledger already closed")
	}
	store, err := usagelog.Open(l.path)
	if err != nil {
		return fmt.Errorf("database %s: %v", l.path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err = accounting.New(store, billing.NewAccounts(l.redis.client), nil, l.log).SeedRedis(ctx)
	cancel()
	if err != nil {
		store.Close()
		return err
	}
	l.store = store
	l.flusher = usagelog.NewFlusher(l.redis.client, store, usagelog.FlusherConfig{
		Stream:   billing.UsageStream,
		Group:    ledgerGroup,
		Consumer: "ledger-" + l.path,
		Interval: l.interval,
	}, l.log.Named("flusher"))
	l.flusher.Start()
	l.ready.Store(true)
	return nil
}

// Destruct drains the usage stream into the ledger and closes it.
func (l *ledgerConn) Destruct() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	var err error
	if l.ready.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err = l.flusher.Stop(ctx); err != nil {
			l.log.Error("draining usage stream on shutdown", zap.Error(err))
		}
		if cerr := l.store.Close(); err == nil {
			err = cerr
		}
	}
	l.redis.release()
	return err
}

func (l *ledgerConn) release() { _, _ = pool.Delete(l.key) }
