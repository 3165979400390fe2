package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/cnaitoken/caddy-aitoken/accounting"
	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/lease"
	"github.com/cnaitoken/caddy-aitoken/settle"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// pool holds what must outlive one config: Redis clients keyed by URL and
// ledgers keyed by database path, so a reload reuses them.
var pool = caddy.NewUsagePool()

// redisConn is a pooled Redis client. Building one touches nothing:
// the client dials on first use, and the settlement pipeline (spool,
// journal, workers) is started by start, when a config using the
// connection starts (`caddy validate` only provisions).
type redisConn struct {
	key      string
	url      string
	sentinel *SentinelConfig
	client   redis.UniversalClient
	// keys caches key records: a fresh one admits from memory, and with
	// on_redis_error allow a recent one is served while Redis is down.
	keys *keyCache
	// leases admits returning customers from balance leases, and rates
	// counts their keys' rpm/tpm from this node's share of each window.
	leases *lease.Book
	rates  *lease.Rates
	log    *zap.Logger
	// settlements carries usage settlements from the end of their
	// response into Redis.
	settlements *settle.Pipeline

	// mu guards start and Destruct; ready is set once start succeeded,
	// and only then are settlements and cancel in use.
	mu     sync.Mutex
	ready  atomic.Bool
	closed bool
	cancel context.CancelFunc // ends the revocation listener

	// migrateMu guards the key layout migration: migrated is set once
	// Redis is known to be in the current layout, and a failed attempt is
	// not tried again for migrateRetry (lastFail, failErr).
	migrateMu sync.Mutex
	migrated  atomic.Bool
	lastFail  time.Time
	failErr   error
}

// Key layout migration timings.
const (
	// migrateTimeout bounds one migration (a SCAN of the whole keyspace).
	migrateTimeout = 5 * time.Minute
	// migrateRetry is how long a failed migration's error is reported
	// before it is tried again, so requests meeting an unreachable Redis
	// at start do not each wait for a dial.
	migrateRetry = time.Second
)

// migrate brings Redis to the current key layout (billing.MigrateLayout)
// before anything on this node touches an account; afterwards it costs
// nothing.
func (c *redisConn) migrate() error {
	if c.migrated.Load() {
		return nil
	}
	c.migrateMu.Lock()
	defer c.migrateMu.Unlock()
	if c.migrated.Load() {
		return nil
	}
	if c.failErr != nil && time.Since(c.lastFail) < migrateRetry {
		return c.failErr
	}
	ctx, cancel := context.WithTimeout(billing.WithOp(context.Background(), "migrate"), migrateTimeout)
	defer cancel()
	m, err := billing.NewAccounts(c.client).MigrateLayout(ctx)
	if m.Keys > 0 || m.Records > 0 {
		c.log.Info("moved Redis to the current key layout", zap.Int("keys", m.Keys), zap.Int("usage_records", m.Records))
	}
	if len(m.Conflicts) > 0 {
		c.log.Warn("old account keys left in place: their new names were taken (was a node of an earlier version still running?); compare with reconcile",
			zap.Strings("keys", m.Conflicts))
	}
	if err != nil {
		// A Redis that did not answer, or answered that it cannot serve
		// yet, makes the node wait for it; an answer refusing the move (a
		// newer layout, a key of the wrong type, a script error) needs the
		// operator, and fails the start.
		refused := errors.Is(err, billing.ErrNewerLayout)
		var reply redis.Error
		if errors.As(err, &reply) && !transientReply(err) {
			refused = true
		}
		err = fmt.Errorf("redis key layout: %w", err)
		if !refused {
			err = redisNotReady{err}
		}
		c.lastFail, c.failErr = time.Now(), err
		return err
	}
	c.migrated.Store(true)
	return nil
}

// transientReply reports whether a Redis error reply says the server
// cannot serve for now (loading its data, a failover, out of memory, a
// script running) rather than that the request is wrong.
func transientReply(err error) bool {
	for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "OOM"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// redisNotReady is a start that failed for want of Redis: a gateway node
// starts anyway and answers 503 until Redis is back (handlers start the
// connection again first).
type redisNotReady struct{ err error }

func (e redisNotReady) Error() string { return e.err.Error() }
func (e redisNotReady) Unwrap() error { return e.err }

// start starts the settlement pipeline (which takes up what stopped
// processes left) and the revocation listener. It runs once, when the
// first config using the connection starts or serves a request; a failed
// start is tried again next time.
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
	if err := c.migrate(); err != nil {
		return err
	}
	if err := c.settlements.Start(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.leases.Start()
	go c.keys.listenNotices(ctx, c.client, c.leases, c.log)
	c.ready.Store(true)
	return nil
}

// leaseReturnTimeout bounds giving back the leases at shutdown; a lease
// not given back expires in Redis.
const leaseReturnTimeout = 5 * time.Second

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
		// No CLIENT SETINFO and no CLIENT MAINT_NOTIFICATIONS on connect:
		// Redis before 7.2 (and any Redis for the second, a Redis
		// Enterprise feature) answers them with errors, which would count
		// as Redis failures.
		uo.DisableIdentity = true
		uo.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		if sentinel != nil {
			uo.MasterName = sentinel.Master
			uo.Addrs = sentinel.Addrs
			uo.SentinelPassword = sentinelPassword
		}
		client := redis.NewUniversalClient(uo)
		client.AddHook(redisHook{})
		log := caddy.Log().Named("aitoken")
		if spoolDir == "" {
			spoolDir = filepath.Join(caddy.AppDataDir(), "aitoken")
		}
		leases := lease.New(billing.NewAccounts(client), lease.Config{Log: log.Named("lease")})
		settlements := settle.New(client, settle.Config{Dir: spoolDir, Target: key, Log: log, Hooks: settle.Hooks{
			Spooled: func() { metrics.spooled.Inc() },
			Lost:    func() { metrics.lost.Inc() },
			// A customer's settlements renew the lease they came from.
			Renewal: leases.Renewal,
			Renewed: leases.Renewed,
		}})
		return &redisConn{key: key, url: url, sentinel: sentinel, client: client, keys: newKeyCache(),
			leases: leases, rates: lease.NewRates(billing.NewAccounts(client)), settlements: settlements, log: log}, nil
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
		c.settlements.Stop()
		// Every settlement is in Redis (or spooled): what the leases have
		// free goes back.
		ctx, cancel := context.WithTimeout(context.Background(), leaseReturnTimeout)
		c.leases.Stop(ctx)
		cancel()
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
	if err := l.redis.migrate(); err != nil {
		return err
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
		Streams:    billing.UsageStreams,
		Field:      billing.UsageField,
		BatchField: billing.UsageBatchField,
		Group:      ledgerGroup,
		Consumer:   "ledger-" + l.path,
		Interval:   l.interval,
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
