package lease

// This file is the background side of a Book: sizing, refills and
// renewals, giving back, and the janitor.

import (
	"context"
	"errors"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// want is the size a's lease should have (a.mu held).
func (b *Book) want(a *account) money.Nanos {
	minLease, maxLease, _ := b.sizes()
	w := minLease
	if a.maxHold > 0 && a.maxHold < maxLease/holdsPerLease {
		w = max(w, a.maxHold*holdsPerLease)
	} else if a.maxHold > 0 {
		w = maxLease
	}
	return min(w, maxLease)
}

// wantLease starts a refill of a's lease in the background unless one is
// running or a recent refusal holds it off (a.mu held).
func (b *Book) wantLease(a *account, now time.Time) {
	if a.refilling || now.Before(a.retryAt) || b.ctx.Err() != nil || b.off.Load() {
		return
	}
	a.refilling = b.spawn(func() { b.refill(a) })
}

// refill tops a's lease up to its wanted size and renews its deadline, or
// takes a new lease when a has none.
func (b *Book) refill(a *account) {
	a.mu.Lock()
	l := a.cur
	epoch := a.recalls
	want := b.want(a)
	minLease, _, share := b.sizes()
	ttl := b.ttl()
	take := billing.LeaseTake{User: a.user, Min: minLease, Share: share, TTL: ttl}
	if l != nil {
		take.ID, take.Refill = l.ID, true
		take.Want = max(want-l.free, 0)
		take.Min = min(take.Min, take.Want)
	} else {
		take.ID = b.node + "." + strconv.FormatInt(b.gens.Add(1), 36)
		take.Want = want
		// A new lease worth taking covers half the holds it is sized
		// for: a balance too small for that is served from Redis, where
		// every request can use all of it.
		take.Min = min(max(take.Min, want/2), want)
	}
	a.mu.Unlock()

	start := time.Now()
	ctx, cancel := context.WithTimeout(b.ctx, callTimeout)
	g, err := b.acc.TakeLease(billing.WithOp(ctx, billing.OpLease), take)
	cancel()
	b.stats.Takes.Add(1)

	var give money.Nanos
	a.mu.Lock()
	a.refilling = false
	switch {
	case errors.Is(err, billing.ErrLeaseLost):
		// Expired, or Redis lost its data: a new lease next time.
		if a.cur == l {
			a.retire()
		}
	case err != nil:
		a.retryAt = time.Now().Add(time.Second)
		if b.ctx.Err() == nil {
			b.cfg.Log.Warn("taking a balance lease", zap.String("user", a.user), zap.Error(err))
		}
	case l == nil && g.Granted == 0:
		// The balance is too small to share: holds in Redis for a while.
		a.retryAt = time.Now().Add(ttl / 6)
	case l == nil && a.recalls != epoch:
		// A recall came in while the lease was taken: it may be sized
		// on money that is gone.
		give = g.Granted
	case l == nil:
		if a.cur == nil {
			a.cur = &Lease{ID: take.ID, free: g.Granted}
			l = a.cur
		} else {
			// A concurrent recall-and-take cannot happen (one refill at
			// a time), but never keep an orphan in Redis.
			give = g.Granted
		}
	case l.retired:
		// Recalled while the refill ran: what it brought goes back.
		give = g.Granted
	default:
		l.free += g.Granted
	}
	if l != nil && err == nil && !l.retired {
		// Set, not extended: a shorter lease_ttl moved Redis's deadline
		// closer too.
		l.deadline = start.Add(ttl * 5 / 6)
		l.renewAt = start.Add(ttl / 3)
	}
	a.mu.Unlock()
	if give > 0 {
		b.giveBack(b.ctx, a.user, take.ID, give)
	}
}

// giveBack returns amount of lease id to the balance.
func (b *Book) giveBack(ctx context.Context, user, id string, amount money.Nanos) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	b.stats.Returns.Add(1)
	if _, err := b.acc.ReturnLease(billing.WithOp(ctx, billing.OpLease), user, id, amount); err != nil {
		// It expires in Redis on its own.
		b.cfg.Log.Warn("giving back a balance lease; it will expire", zap.String("user", user), zap.Error(err))
	}
}

// janitor renews leases with requests in flight and gives back those of
// customers gone quiet, until Stop.
func (b *Book) janitor() {
	tick := time.NewTicker(min(b.cfg.Idle/3, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case now := <-tick.C:
			b.sweep(now)
		}
	}
}

// sweep is one round of the janitor.
func (b *Book) sweep(now time.Time) {
	b.mu.Lock()
	accts := make([]*account, 0, len(b.accounts))
	for u, a := range b.accounts {
		a.mu.Lock()
		if a.cur == nil && len(a.draining) == 0 && !a.refilling && now.Sub(a.lastUse) > 2*b.cfg.Idle {
			delete(b.accounts, u)
		} else {
			accts = append(accts, a)
		}
		a.mu.Unlock()
	}
	b.mu.Unlock()
	for _, a := range accts {
		a.mu.Lock()
		for _, d := range a.draining {
			if !d.renewing && !now.Before(d.renewAt) {
				d.renewing = b.spawn(func() { b.renewDraining(a, d) })
			}
		}
		l := a.cur
		switch {
		case l == nil:
		case l.inflight == 0 && now.Sub(a.lastUse) > b.cfg.Idle:
			l, give := a.retire()
			if give > 0 {
				b.spawn(func() { b.giveBack(b.ctx, a.user, l.ID, give) })
			}
		case !now.Before(l.renewAt):
			b.wantLease(a, now)
		}
		a.mu.Unlock()
	}
}

// Renewal is how far a settle script may move the deadline of lease id
// of user (billing.LeaseBatch.Renew), or 0: the node's current lease of
// the customer is renewed by its settlements once a sixth of its TTL has
// passed since the last renewal, well before the renewal the lease would
// otherwise ask for itself. A customer who keeps it settling so needs no
// renewal script of its own.
func (b *Book) Renewal(user, id string, now time.Time) time.Duration {
	a := b.known(user)
	if a == nil {
		return 0
	}
	ttl := b.ttl()
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.cur
	if l == nil || l.ID != id || l.retired || now.Before(l.renewAt.Add(-ttl/6)) || !now.Before(l.deadline) {
		return 0
	}
	return ttl
}

// Renewed records that a settle script sent at sent renewed lease id of
// user by ttl: Redis's deadline is now past sent + ttl, so the node trusts
// the lease as it does after a refill started at sent.
func (b *Book) Renewed(user, id string, sent time.Time, ttl time.Duration) {
	b.stats.Renewed.Add(1)
	a := b.known(user)
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.cur
	if l == nil || l.ID != id || l.retired || ttl != b.ttl() {
		// With lease_ttl changed since, a refill may have set a closer
		// deadline in Redis after this one: trust the lease no longer.
		return
	}
	// Extended, never cut: Redis keeps the latest deadline written, and
	// with one TTL that is the furthest.
	if d := sent.Add(ttl * 5 / 6); d.After(l.deadline) {
		l.deadline = d
	}
	if r := sent.Add(ttl / 3); r.After(l.renewAt) {
		l.renewAt = r
	}
}
