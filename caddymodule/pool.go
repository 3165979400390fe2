package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/spool"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// pool holds what must outlive one config: Redis clients keyed by URL and
// ledgers keyed by database path, so a reload reuses them.
var pool = caddy.NewUsagePool()

// redisConn is a pooled Redis client.
type redisConn struct {
	key      string
	url      string
	sentinel *SentinelConfig
	client   redis.UniversalClient
	// keys caches key records for on_redis_error allow.
	keys   *keyCache
	cancel context.CancelFunc
	// spool keeps settlements Redis could not take; replayer retries them.
	spool    *spool.Spool
	replayer *spool.Replayer
}

// spooled is a settlement waiting in the spool.
type spooled struct {
	Grant  billing.Grant      `json:"grant"`
	Cost   billing.Nanos      `json:"cost"`
	Tokens int64              `json:"tokens"`
	Record json.RawMessage    `json:"record"`
	Mode   billing.SettleMode `json:"mode"`
}

// settle applies a settlement, or spools it when Redis cannot take it, so
// no usage record is lost.
func (c *redisConn) settle(ctx context.Context, s spooled, log *zap.Logger) {
	accounts := billing.NewAccounts(c.client)
	// The first attempt debits even when Redis lost the hold (a restart
	// without persistence): the client lets no command retry, so it runs
	// at most once. The spooled replay is idempotent instead: it may
	// follow a first attempt that applied but whose reply was lost.
	first := billing.SettleLive
	if s.Grant.NoHold {
		first = billing.SettleReplayNoHold
	}
	_, err := accounts.Settle(ctx, s.Grant, s.Cost, s.Tokens, s.Record, first)
	if err == nil {
		return
	}
	log.Warn("settling in redis failed; spooling it for replay",
		zap.String("request_id", s.Grant.RequestID), zap.Error(err))
	s.Mode = s.Grant.Mode()
	payload, err := json.Marshal(s)
	if err == nil {
		err = c.spool.Append(spool.Entry{ID: s.Grant.RequestID, Payload: payload})
	}
	if err != nil {
		log.Error("usage record lost: cannot spool settlement",
			zap.String("request_id", s.Grant.RequestID), zap.String("user", s.Grant.User),
			zap.String("cost", s.Cost.String()), zap.Error(err))
		return
	}
	c.replayer.Kick()
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
		sp, err := spool.Open(spoolPath(spoolDir, key))
		if err != nil {
			return nil, fmt.Errorf("spool: %v", err)
		}
		log := caddy.Log().Named("aitoken")
		rc := &redisConn{key: key, url: url, sentinel: sentinel, client: redis.NewUniversalClient(uo),
			keys: newKeyCache(), spool: sp}
		rc.replayer = spool.NewReplayer(sp, rc.replay, time.Second, log.Named("spool"))
		rc.replayer.Start()
		ctx, cancel := context.WithCancel(context.Background())
		rc.cancel = cancel
		go rc.keys.listenRevocations(ctx, rc.client, log)
		return rc, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*redisConn), nil
}

// Destruct closes the client once no config uses it.
func (c *redisConn) Destruct() error {
	c.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.replayer.Stop(ctx)
	_ = c.spool.Close()
	return c.client.Close()
}

func (c *redisConn) release() { _, _ = pool.Delete(c.key) }

// ledgerConn is a pooled SQLite ledger and the flusher feeding it.
type ledgerConn struct {
	key     string
	store   *usagelog.Store
	flusher *usagelog.Flusher
	redis   *redisConn
	log     *zap.Logger
}

func acquireLedger(path string, rc *redisConn, interval time.Duration, log *zap.Logger) (*ledgerConn, error) {
	key := "ledger|" + path + "|" + rc.key
	v, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) {
		store, err := usagelog.Open(path)
		if err != nil {
			return nil, fmt.Errorf("database %s: %v", path, err)
		}
		// The flusher keeps its own reference to the Redis client, so the
		// client outlives the final drain.
		own, err := acquireRedis(rc.url, rc.sentinel, "")
		if err != nil {
			store.Close()
			return nil, err
		}
		if err := seedRedis(store, billing.NewAccounts(own.client), log); err != nil {
			own.release()
			store.Close()
			return nil, err
		}
		f := usagelog.NewFlusher(own.client, store, usagelog.FlusherConfig{
			Stream:   billing.UsageStream,
			Group:    "ledger",
			Consumer: "ledger-" + path,
			Interval: interval,
		}, log.Named("flusher"))
		f.Start()
		return &ledgerConn{key: key, store: store, flusher: f, redis: own, log: log}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*ledgerConn), nil
}

// Destruct drains the usage stream into the ledger and closes it.
func (l *ledgerConn) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := l.flusher.Stop(ctx)
	if err != nil {
		l.log.Error("draining usage stream on shutdown", zap.Error(err))
	}
	if cerr := l.store.Close(); err == nil {
		err = cerr
	}
	l.redis.release()
	return err
}

func (l *ledgerConn) release() { _, _ = pool.Delete(l.key) }

// seedRedis rebuilds accounts and keys in a Redis that has none (new, or
// restarted without its data) from the ledger, the system of record.
func seedRedis(store *usagelog.Store, accounts *billing.Accounts, log *zap.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seeded, err := accounts.Seeded(ctx)
	if err != nil {
		return fmt.Errorf("redis: %v", err)
	}
	if seeded {
		return nil
	}
	// The seed includes every ledger entry: none may be applied again.
	if _, err := store.MarkAllApplied(ctx); err != nil {
		return err
	}
	balances, err := store.Balances(ctx)
	if err != nil {
		return err
	}
	active, err := store.ActiveKeys(ctx)
	if err != nil {
		return err
	}
	keys := make(map[string]billing.KeyRecord, len(active))
	for _, k := range active {
		rec := billing.KeyRecord{ID: k.ID, User: k.UserID, Active: true, Models: k.Models, RPM: k.RPM, TPM: k.TPM, AllowedIPs: k.AllowedIPs}
		if k.ExpiresAt != nil {
			rec.ExpiresAt = *k.ExpiresAt
		}
		keys[k.Hash] = rec
	}
	if err := accounts.Seed(ctx, balances, keys); err != nil {
		return fmt.Errorf("seeding redis from the ledger: %v", err)
	}
	log.Info("seeded redis from the ledger", zap.Int("accounts", len(balances)), zap.Int("keys", len(keys)))
	return nil
}
