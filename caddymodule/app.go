// Package caddymodule is the Caddy glue of caddy-aitoken: the aitoken app,
// the metering handler, the admin API and their Caddyfile syntax. It wires
// the meter, billing, usagelog, accounting and payments packages and
// translates errors to HTTP.
package caddymodule

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/lease"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App is the aitoken app: the state every aitoken handler of one config
// shares. Its Redis client and SQLite ledger are pooled across config
// reloads, so a reload neither drops a usage record nor opens a second
// writer on the ledger.
type App struct {
	// Redis is the go-redis URL of the shared serving state, e.g.
	// "redis://127.0.0.1:6379/0". {env.*} and {file.*} placeholders are
	// resolved at provision time so a password never appears in the config.
	// Default: "redis://127.0.0.1:6379/0".
	Redis string `json:"redis,omitempty"`

	// RedisSentinel, when set, reaches Redis through Sentinel for
	// failover: the master name and sentinel addresses. Password and
	// database number still come from Redis (a URL).
	RedisSentinel *SentinelConfig `json:"redis_sentinel,omitempty"`

	// SpoolDir is where settlements that could not reach Redis wait, in an
	// append-only file, until they are replayed. Default: Caddy's data
	// directory, under aitoken/.
	SpoolDir string `json:"spool_dir,omitempty"`

	// Database is the path of the SQLite ledger, the system of record. Only
	// the ledger node sets it; it runs the usage flusher and the admin API.
	// Placeholders are resolved.
	Database string `json:"database,omitempty"`

	// Currency is the ISO code of the currency prices and balances are in.
	// Default: "USD".
	Currency string `json:"currency,omitempty"`

	// Prices maps a model name, or a prefix ending in "*", to its price per
	// one million tokens. They win over PricingFile.
	Prices map[string]money.Price `json:"prices,omitempty"`

	// PricingFile is a JSON file with more prices, in the same form as
	// Prices. Placeholders are resolved.
	PricingFile string `json:"pricing_file,omitempty"`

	// Stripe configures card top-ups through Stripe Checkout and the
	// webhook that credits them (see stripe.go).
	Stripe *StripeConfig `json:"stripe,omitempty"`

	// FlushInterval is the longest a usage record waits in Redis before the
	// flusher writes it to the ledger. Default: 1s.
	FlushInterval caddy.Duration `json:"flush_interval,omitempty"`

	// UsageRetention is how long usage rows (and unreadable usage stream
	// entries) are kept before the ledger node's retention job deletes
	// them, their cost folded into the ledger so no balance moves.
	// Default: 365 days. In JSON, a Go duration or "365d".
	UsageRetention caddy.Duration `json:"usage_retention,omitempty"`

	// PaymentRetention is how long payment records (Stripe top-ups,
	// refunds, disputes) are kept after their last change. Ledger entries,
	// the money itself, are never deleted. Default: 2555 days (7 years).
	PaymentRetention caddy.Duration `json:"payment_retention,omitempty"`

	// LogClientIP, when false, keeps the client IP out of usage records.
	// Default: true.
	LogClientIP *bool `json:"log_client_ip,omitempty"`

	// LeaseMax is the most of one customer's available balance a node
	// reserves ahead (a balance lease) to admit that customer's requests
	// from memory, with no Redis round trip; 0 turns leases off, and every
	// request then reserves its hold in Redis. Leases never let requests
	// overdraw: what a node leased is held from the balance like a hold.
	// Default: 5.00.
	LeaseMax *money.Nanos `json:"lease_max,omitempty"`

	// LeaseNodes is how many gateway nodes may lease one customer's
	// balance at once: a node's lease is at most the available balance
	// divided by it. Default: 4.
	LeaseNodes int `json:"lease_nodes,omitempty"`

	// LeaseTTL is how long a lease lives in Redis unless its node renews
	// it (nodes renew a lease in use every third of it): after a node
	// dies, its leases hold the customers' money this long at most.
	// Default: 30s.
	LeaseTTL caddy.Duration `json:"lease_ttl,omitempty"`

	prices   *money.PriceTable
	aliases  aliasNames // the model aliases of this config's handlers
	accounts *billing.Accounts
	redis    *redisConn
	ledger   *ledgerConn // nil on gateway-only nodes
	log      *zap.Logger

	ctx   caddy.Context
	loops sync.WaitGroup // background loops started by Start; they end on ctx

	inflight *tracker // handlers running on this config
	settling *tracker // usage settlements not yet written to Redis
	stopped  atomic.Bool
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "aitoken",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision resolves secrets, builds the price table and takes (or creates)
// the pooled Redis client and ledger. It touches nothing: no dial, no file
// (`caddy validate` provisions too); Start opens them.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.log = ctx.Logger()
	a.inflight, a.settling = new(tracker), new(tracker)
	if err := registerMetrics(ctx); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	repl := caddy.NewReplacer()
	if a.Redis == "" {
		a.Redis = "redis://127.0.0.1:6379/0"
	}
	if a.Currency == "" {
		a.Currency = "USD"
	}
	a.Currency = strings.ToUpper(a.Currency)
	if a.FlushInterval <= 0 {
		a.FlushInterval = caddy.Duration(time.Second)
	}
	if a.UsageRetention == 0 {
		a.UsageRetention = caddy.Duration(defaultUsageRetention)
	}
	if a.PaymentRetention == 0 {
		a.PaymentRetention = caddy.Duration(defaultPaymentRetention)
	}

	prices, err := a.loadPrices(repl)
	if err != nil {
		return err
	}
	a.prices, err = money.NewPriceTable(prices)
	if err != nil {
		return err
	}

	redisURL, err := repl.ReplaceOrErr(a.Redis, true, true)
	if err != nil {
		return fmt.Errorf("redis: %v", err)
	}
	spoolDir, err := repl.ReplaceOrErr(a.SpoolDir, true, true)
	if err != nil {
		return fmt.Errorf("spool_dir: %v", err)
	}
	a.redis, err = acquireRedis(redisURL, a.RedisSentinel, spoolDir)
	if err != nil {
		return err
	}
	a.accounts = billing.NewAccounts(a.redis.client)

	if a.Database != "" {
		dbPath, err := repl.ReplaceOrErr(a.Database, true, true)
		if err != nil {
			return fmt.Errorf("database: %v", err)
		}
		if dbPath, err = filepath.Abs(dbPath); err != nil {
			return fmt.Errorf("database: %v", err)
		}
		a.ledger, err = acquireLedger(dbPath, a.redis, time.Duration(a.FlushInterval), a.log)
		if err != nil {
			return err
		}
	}
	return nil
}

func (a *App) loadPrices(repl *caddy.Replacer) (map[string]money.Price, error) {
	prices := make(map[string]money.Price)
	if a.PricingFile != "" {
		path, err := repl.ReplaceOrErr(a.PricingFile, true, true)
		if err != nil {
			return nil, fmt.Errorf("pricing_file: %v", err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("pricing_file: %v", err)
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&prices); err != nil {
			return nil, fmt.Errorf("pricing_file %s: %v", path, err)
		}
	}
	for model, p := range a.Prices {
		prices[model] = p
	}
	for model, p := range prices {
		if p.Input == 0 && p.Output == 0 {
			return nil, fmt.Errorf("price %s: input and output are required", model)
		}
	}
	return prices, nil
}

// SentinelConfig names a Redis master watched by Sentinel.
type SentinelConfig struct {
	// Master is the name the sentinels know the master by.
	Master string `json:"master"`
	// Addrs are the sentinels, host:port.
	Addrs []string `json:"addrs"`
	// Password authenticates to the sentinels themselves, if they need it.
	// Placeholders are resolved.
	Password string `json:"password,omitempty"`
}

// Validate checks the configuration.
func (a *App) Validate() error {
	if s := a.RedisSentinel; s != nil && (s.Master == "" || len(s.Addrs) == 0) {
		return fmt.Errorf("redis_sentinel: a master name and at least one sentinel address are required")
	}
	if len(a.Currency) != 3 {
		return fmt.Errorf("currency %q: want a 3-letter ISO code", a.Currency)
	}
	// Zero is the default (set at provision).
	if a.UsageRetention != 0 && a.UsageRetention < caddy.Duration(minRetention) {
		return fmt.Errorf("usage_retention %s: want at least %s", time.Duration(a.UsageRetention), minRetention)
	}
	if a.PaymentRetention != 0 && a.PaymentRetention < caddy.Duration(minPaymentRetention) {
		return fmt.Errorf("payment_retention %s: want at least 180d: refunds and card disputes of a top-up arrive up to "+
			"120 days after it, and one whose record is gone can no longer be taken back", time.Duration(a.PaymentRetention))
	}
	if a.LeaseMax != nil && (*a.LeaseMax < 0 || *a.LeaseMax > money.MaxNanos) {
		return fmt.Errorf("lease_max %s: want 0 (off) up to %s", *a.LeaseMax, money.MaxNanos)
	}
	if a.LeaseTTL != 0 && (a.LeaseTTL < caddy.Duration(time.Second) || a.LeaseTTL > caddy.Duration(time.Hour)) {
		return fmt.Errorf("lease_ttl %s: want 1s to 1h", time.Duration(a.LeaseTTL))
	}
	if a.LeaseNodes < 0 || a.LeaseNodes > maxLeaseNodes {
		return fmt.Errorf("lease_nodes %d: want 1 to %d", a.LeaseNodes, maxLeaseNodes)
	}
	return nil
}

// leaseSizes is lease_max (0: off) and lease_nodes, with their defaults.
func (a *App) leaseSizes() (money.Nanos, int64) {
	maxLease := lease.DefaultMax
	if a.LeaseMax != nil {
		maxLease = *a.LeaseMax
	}
	return maxLease, int64(cmp.Or(a.LeaseNodes, lease.DefaultShare))
}

// maxLeaseNodes bounds lease_nodes.
const maxLeaseNodes = 1000

// keepClientIP reports whether usage records may hold the client's IP
// (log_client_ip, default on).
func (a *App) keepClientIP() bool { return a.LogClientIP == nil || *a.LogClientIP }

// Start opens the shared Redis state and, on the ledger node, the ledger
// (seeding Redis from it if Redis lost its data), makes this config's app
// the one the admin API serves, and on the ledger node starts the
// background jobs: retention, and the repair of credits and payments the
// ledger recorded but Redis missed (now, then every repairInterval). The
// jobs end with this config's context.
func (a *App) Start() error {
	if err := a.ready(); err != nil {
		// A ledger node needs Redis to start; a gateway node starts and
		// refuses requests (503) until Redis answers.
		if !errors.As(err, new(redisNotReady)) || a.ledger != nil {
			return err
		}
		a.log.Warn("redis unreachable: requests are refused until it answers", zap.Error(err))
	}
	maxLease, share := a.leaseSizes()
	a.redis.leases.SetSizes(maxLease, share, time.Duration(a.LeaseTTL))
	activeApp.Store(a)
	if a.ledger != nil {
		a.loops.Go(func() { runRetention(a.ctx, a.retentionJob()) })
		first, cancel := context.WithTimeout(a.ctx, repairTimeout)
		a.repairCredits(first)
		cancel()
		a.loops.Go(func() { a.repairLoop(a.ctx) })
	}
	return nil
}

// ready opens the pooled Redis state and ledger if no one has yet. Caddy
// starts apps in no set order, so a request may reach a handler before
// this app's Start: handlers call it first.
func (a *App) ready() error {
	if err := a.redis.start(); err != nil {
		return err
	}
	if a.ledger != nil {
		return a.ledger.start()
	}
	return nil
}

// Stop stops serving the admin API from this app if it is still the active
// one. Its background jobs end with the config's context.
func (a *App) Stop() error {
	activeApp.CompareAndSwap(a, nil)
	return nil
}

// Cleanup lets requests still in flight on this config finish, then gives
// back its references to the pooled Redis client and ledger. When a reload
// keeps them in use by the new config, nothing closes.
func (a *App) Cleanup() error {
	if !a.stopped.CompareAndSwap(false, true) {
		return nil
	}
	// The context is done: the jobs are giving up; wait for them so none
	// uses the ledger after its release.
	a.loops.Wait()
	release := func() {
		if a.ledger != nil {
			a.ledger.release()
		}
		if a.redis != nil {
			a.redis.release()
		}
	}
	// Settlements take milliseconds, or up to about a second under load
	// (lease settlements gather for one batch): wait for them here, so a
	// shutdown drains every usage record into the stream before the
	// ledger closes.
	select {
	case <-a.settling.idle():
	case <-time.After(settleDrainTimeout):
		a.log.Error("usage settlements still pending after drain timeout")
	}
	select {
	case <-a.inflight.idle():
		release()
	default:
		// Old streams can outlive a reload; release when they end.
		go func() {
			select {
			case <-a.inflight.idle():
				<-a.settling.idle()
			case <-time.After(drainTimeout):
				a.log.Warn("requests still in flight after drain timeout; releasing shared connections")
			}
			release()
		}()
	}
	return nil
}

// Bounds on how long a cleaned-up config waits for its requests and for
// their settlements.
const (
	drainTimeout       = 15 * time.Minute
	settleDrainTimeout = 10 * time.Second
)

// activeApp is the app of the running config, for the admin API (admin
// modules are provisioned before apps and never cleaned up).
var activeApp atomic.Pointer[App]

// What needs the ledger is refused on a node without a database (a gateway
// node): errNoLedger for the admin API (the operator's error), and
// errNoLedgerAPI, the same refusal in OpenAI's shape, for API clients.
var (
	errNoLedger    = errors.New("this node has no aitoken database configured")
	errNoLedgerAPI = &apiError{http.StatusServiceUnavailable, "server_error", "service_unavailable",
		"Usage history is kept on the ledger node; this gateway node has none. Please retry shortly.", ""}
)

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)

// tracker counts requests in flight and tells when there are none.
type tracker struct {
	mu   sync.Mutex
	n    int
	done chan struct{}
}

func (t *tracker) begin() {
	t.mu.Lock()
	t.n++
	t.mu.Unlock()
}

func (t *tracker) end() {
	t.mu.Lock()
	t.n--
	if t.n == 0 && t.done != nil {
		close(t.done)
		t.done = nil
	}
	t.mu.Unlock()
}

// idle returns a channel closed once no request is in flight.
func (t *tracker) idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	if t.done == nil {
		t.done = make(chan struct{})
	}
	return t.done
}
