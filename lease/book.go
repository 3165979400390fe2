// Package lease admits a returning customer's requests from memory: a
// node reserves a slice of the customer's available balance in Redis (a
// balance lease) and takes each request's hold from it locally, with no
// Redis round trip. Leases are refilled in the background before they
// run out, renewed while in use, given back when the customer goes quiet,
// when a recall notice says the account changed, and at shutdown; a lease
// its node stops renewing expires in Redis. Money stays conserved on any
// number of nodes: balance − Σ leases − Σ holds ≥ 0.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// Config sizes and times a Book's leases.
type Config struct {
	// Min is the smallest lease worth taking: a customer whose share of
	// the available balance is smaller is admitted with a hold per
	// request in Redis.
	Min money.Nanos
	// Max is the largest lease one node holds for one customer.
	Max money.Nanos
	// Share divides a customer's available balance: one node's lease is at
	// most available / Share, so that Share nodes can lease at once.
	Share int64
	// TTL is how long a lease lives in Redis unless renewed; a node that
	// dies loses its leases after it. Renewals come well before.
	TTL time.Duration
	// Idle is how long a customer may go without a request before the
	// lease is given back.
	Idle time.Duration
	// Log receives what goes wrong in the background.
	Log *zap.Logger
}

// Defaults of Config.
const (
	DefaultShare = 4
	DefaultTTL   = 30 * time.Second
	DefaultIdle  = 15 * time.Second
)

// DefaultMin and DefaultMax bound a lease: 0.01 and 5.00 currency units.
const (
	DefaultMin money.Nanos = 10_000_000
	DefaultMax money.Nanos = 5_000_000_000
)

// holdsPerLease is how many of a customer's largest recent holds a lease
// is sized to cover at least, so that requests in flight at once are all
// admitted locally.
const holdsPerLease = 32

// Redis round trips of the background work are bounded by this.
const callTimeout = 2 * time.Second

// Book holds this node's leases. Its methods are safe for concurrent use.
type Book struct {
	acc  *billing.Accounts
	cfg  Config
	node string
	gens atomic.Int64

	// mu guards accounts. Locks are taken in this order: mu, then an
	// account's mu, then cfgMu.
	mu       sync.RWMutex
	accounts map[string]*account
	off      atomic.Bool
	// cfgMu guards cfg's sizes and TTL, which SetSizes changes; it is read
	// under an account's mu, so it is never held while taking another.
	cfgMu sync.RWMutex

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// bg guards stopped: once set, background work runs in line.
	bg      sync.Mutex
	stopped bool
	stats   Stats
}

// account is one customer's state on this node; mu guards every field
// and those of its leases.
type account struct {
	mu   sync.Mutex
	user string
	cur  *Lease // the lease admitting now; nil when none
	// draining are the account's retired leases with requests still in
	// flight: renewed until those settle, so that their holds stay
	// reserved in Redis however long the requests run.
	draining  []*Lease
	refilling bool
	// retryAt holds off a new lease after one was refused (balance too
	// small) or failed.
	retryAt time.Time
	lastUse time.Time
	// maxHold is the largest hold asked for lately: leases cover
	// holdsPerLease of them.
	maxHold money.Nanos
	// recalls counts recalls: a lease taken while one came in may be
	// sized on money that is gone, and goes back.
	recalls int
}

// Lease is one lease generation of one customer on this node.
type Lease struct {
	// ID names the lease in Redis.
	ID string
	// free is what new holds may take.
	free money.Nanos
	// inflight counts requests admitted from it and not yet settled.
	inflight int
	// seq numbers its settlements (the last one given).
	seq int64
	// deadline is when the node stops trusting it (before Redis lets it
	// expire); renewAt is when a renewal is asked for.
	deadline, renewAt time.Time
	// retired is set once it admits no more (recalled, idle, expired,
	// lost): what its requests give back then goes back to Redis.
	retired bool
	// renewing is set while a renewal of a draining lease runs.
	renewing bool
}

// Ticket is a request admitted from a lease: the hold taken from it.
type Ticket struct {
	acct  *account
	lease *Lease
	// Hold is what the request took from the lease.
	Hold money.Nanos
}

// LeaseID names the lease the ticket's hold came from ("" for none).
func (t Ticket) LeaseID() string {
	if t.lease == nil {
		return ""
	}
	return t.lease.ID
}

// Stats counts what a Book did.
type Stats struct {
	// Admitted and Missed count requests admitted locally and those sent
	// to Redis for a hold.
	Admitted, Missed atomic.Int64
	// Takes counts lease scripts (new, refill, renewal); Returns counts
	// give-backs.
	Takes, Returns atomic.Int64
	// Renewed counts renewals made by settle scripts (Renewed).
	Renewed atomic.Int64
}

// New returns a Book on acc. Start begins its background work.
func New(acc *billing.Accounts, cfg Config) *Book {
	if cfg.Min <= 0 {
		cfg.Min = DefaultMin
	}
	if cfg.Max <= 0 {
		cfg.Max = DefaultMax
	}
	cfg.Max = max(cfg.Max, cfg.Min)
	if cfg.Share <= 0 {
		cfg.Share = DefaultShare
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Idle <= 0 {
		cfg.Idle = DefaultIdle
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	ctx, cancel := context.WithCancel(context.Background())
	return &Book{acc: acc, cfg: cfg, node: hex.EncodeToString(b[:]), accounts: make(map[string]*account),
		ctx: ctx, cancel: cancel}
}

// SetSizes changes the largest lease, the share and the TTL (see Config;
// zero share or TTL keeps the one set); a max of 0 turns leases off and
// recalls every lease. It takes effect for the next lease taken.
func (b *Book) SetSizes(maxLease money.Nanos, share int64, ttl time.Duration) {
	b.cfgMu.Lock()
	if ttl > 0 {
		b.cfg.TTL = ttl
	}
	if maxLease > 0 {
		b.cfg.Max = max(maxLease, b.cfg.Min)
	}
	if share > 0 {
		b.cfg.Share = share
	}
	b.cfgMu.Unlock()
	if b.off.Swap(maxLease == 0) != (maxLease == 0) && maxLease == 0 {
		b.RecallAll()
	}
}

// sizes returns the lease sizes now.
func (b *Book) sizes() (minLease, maxLease money.Nanos, share int64) {
	b.cfgMu.RLock()
	defer b.cfgMu.RUnlock()
	return b.cfg.Min, b.cfg.Max, b.cfg.Share
}

// ttl returns the lease TTL now.
func (b *Book) ttl() time.Duration {
	b.cfgMu.RLock()
	defer b.cfgMu.RUnlock()
	return b.cfg.TTL
}

// Stats returns the Book's counters.
func (b *Book) Stats() *Stats { return &b.stats }

// background runs fn on its own goroutine, or at once after Stop. Never
// call it with an account's lock held: use spawn.
func (b *Book) background(fn func()) {
	if !b.spawn(fn) {
		fn()
	}
}

// spawn runs fn on its own goroutine and reports true, or, after Stop,
// does nothing and reports false: for work started with an account's lock
// held, which must never run in line (a refill takes that lock; a give-back
// would hold it over a Redis round trip).
func (b *Book) spawn(fn func()) bool {
	b.bg.Lock()
	defer b.bg.Unlock()
	if b.stopped {
		return false
	}
	b.wg.Go(fn)
	return true
}

// Start begins the janitor: it renews leases in use, and gives back those
// of customers gone quiet.
func (b *Book) Start() {
	b.background(b.janitor)
}

// Stop ends the background work and gives every lease back (what
// requests still in flight hold stays until they settle or the lease
// expires).
func (b *Book) Stop(ctx context.Context) {
	b.bg.Lock()
	b.stopped = true
	b.bg.Unlock()
	b.cancel()
	b.wg.Wait()
	b.mu.RLock()
	accts := make([]*account, 0, len(b.accounts))
	for _, a := range b.accounts {
		accts = append(accts, a)
	}
	b.mu.RUnlock()
	for _, a := range accts {
		a.mu.Lock()
		l, give := a.retire()
		a.mu.Unlock()
		if l != nil && give > 0 {
			b.giveBack(ctx, a.user, l.ID, give)
		}
	}
}

// Admit takes a hold for a request of user from the node's lease: upTo,
// the most the request can cost (hold is the least it needs, for callers
// that take less elsewhere). It reports false (nothing taken) when there
// is no live lease with upTo in it; the caller then reserves a hold in
// Redis, and a lease is asked for in the background.
func (b *Book) Admit(user string, hold, upTo money.Nanos) (Ticket, bool) {
	if b.off.Load() {
		return Ticket{}, false
	}
	a := b.account(user)
	now := time.Now()
	a.mu.Lock()
	a.lastUse = now
	a.maxHold = max(a.maxHold, upTo, hold)
	l := a.cur
	if l != nil && !now.Before(l.deadline) {
		// Not renewed in time: Redis lets it expire soon (after Stop,
		// without a give-back).
		if old, give := a.retire(); give > 0 {
			b.spawn(func() { b.giveBack(b.ctx, user, old.ID, give) })
		}
		l = nil
	}
	if l == nil || l.free < upTo || upTo < hold {
		// A request that may cost more than the lease has goes to Redis,
		// where its hold can grow to the whole available balance (as it
		// would without leases): a lease never lets one overdraw more.
		b.wantLease(a, now)
		a.mu.Unlock()
		b.stats.Missed.Add(1)
		return Ticket{}, false
	}
	h := upTo
	l.free -= h
	l.inflight++
	if l.free < b.want(a)/2 || !now.Before(l.renewAt) {
		b.wantLease(a, now)
	}
	a.mu.Unlock()
	b.stats.Admitted.Add(1)
	return Ticket{acct: a, lease: l, Hold: h}, true
}

// Prime asks for user's lease in the background, sized for requests that
// may cost upTo, after a request was admitted with a hold in Redis: the
// customer's next request finds it.
func (b *Book) Prime(user string, upTo money.Nanos) {
	if b.off.Load() {
		return
	}
	a := b.account(user)
	now := time.Now()
	a.mu.Lock()
	a.lastUse = now
	a.maxHold = max(a.maxHold, upTo)
	if a.cur == nil {
		b.wantLease(a, now)
	}
	a.mu.Unlock()
}

// Settle ends the ticket's request, which cost cost, and returns the
// settlement's sequence number in its lease: every number given must
// reach SettleLease once, or the lease's later settlements wait in Redis
// behind the gap.
func (b *Book) Settle(t Ticket, cost money.Nanos) int64 {
	a, l := t.acct, t.lease
	a.mu.Lock()
	l.inflight--
	l.free += t.Hold - cost
	l.seq++
	seq := l.seq
	give := b.leftover(a, l)
	a.mu.Unlock()
	if give > 0 {
		b.background(func() { b.giveBack(b.ctx, a.user, l.ID, give) })
	}
	return seq
}

// Release ends the ticket's request without a settlement (nothing was
// billed): its whole hold goes back to the lease.
func (b *Book) Release(t Ticket) {
	a, l := t.acct, t.lease
	a.mu.Lock()
	l.inflight--
	l.free += t.Hold
	give := b.leftover(a, l)
	a.mu.Unlock()
	if give > 0 {
		b.background(func() { b.giveBack(b.ctx, a.user, l.ID, give) })
	}
}

// known returns user's account on this node, or nil.
func (b *Book) known(user string) *account {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.accounts[user]
}

func (b *Book) account(user string) *account {
	b.mu.RLock()
	a := b.accounts[user]
	b.mu.RUnlock()
	if a != nil {
		return a
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if a = b.accounts[user]; a == nil {
		a = &account{user: user}
		b.accounts[user] = a
	}
	return a
}
