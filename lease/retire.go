package lease

// This file retires leases: a recall (the account changed), and the
// leases that drain after retiring, renewed until the requests admitted
// from them settle and give back the rest.

import (
	"context"
	"errors"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// leftover is what a retired lease with no request left in flight gives
// back; such a lease leaves a's draining ones (a.mu held).
func (b *Book) leftover(a *account, l *Lease) money.Nanos {
	if !l.retired || l.inflight > 0 {
		return 0
	}
	if i := slices.Index(a.draining, l); i >= 0 {
		a.draining = slices.Delete(a.draining, i, i+1)
	}
	give := max(l.free, 0)
	l.free = 0
	return give
}

// Recall retires user's lease and gives back what it has free: the
// account changed (a debit, a refund, a dispute) and the next request
// must see the new balance.
func (b *Book) Recall(user string) {
	a := b.known(user)
	if a == nil {
		return
	}
	a.mu.Lock()
	l, give := a.retire()
	a.retryAt = time.Time{}
	a.recalls++
	a.mu.Unlock()
	if l != nil && give > 0 {
		b.background(func() { b.giveBack(b.ctx, user, l.ID, give) })
	}
}

// RecallAll recalls every lease (recall notices may have been missed).
func (b *Book) RecallAll() {
	b.mu.RLock()
	users := make([]string, 0, len(b.accounts))
	for u := range b.accounts {
		users = append(users, u)
	}
	b.mu.RUnlock()
	for _, u := range users {
		b.Recall(u)
	}
}

// retire stops a's lease from admitting and returns it with what it has
// free to give back now; requests still in flight give back their part as
// they settle, and the lease drains until then (a.mu held).
func (a *account) retire() (*Lease, money.Nanos) {
	l := a.cur
	if l == nil {
		return nil, 0
	}
	a.cur = nil
	l.retired = true
	if l.inflight > 0 {
		a.draining = append(a.draining, l)
	}
	give := l.free
	l.free = 0
	return l, give
}

// renewDraining renews l, a retired lease of a whose requests are still in
// flight, adding nothing to it: their holds stay reserved in Redis until
// they settle, however long that takes. A lease Redis no longer has is
// not renewed again.
func (b *Book) renewDraining(a *account, l *Lease) {
	start := time.Now()
	ttl := b.ttl()
	ctx, cancel := context.WithTimeout(b.ctx, callTimeout)
	_, err := b.acc.TakeLease(billing.WithOp(ctx, billing.OpLease),
		billing.LeaseTake{User: a.user, ID: l.ID, Share: 1, TTL: ttl, Refill: true})
	cancel()
	b.stats.Takes.Add(1)
	a.mu.Lock()
	defer a.mu.Unlock()
	l.renewing = false
	switch {
	case err == nil:
		l.deadline, l.renewAt = start.Add(ttl*5/6), start.Add(ttl/3)
	case errors.Is(err, billing.ErrLeaseLost):
		// Gone from Redis (expired, or Redis lost its data): nothing
		// left to renew.
		a.draining = slices.DeleteFunc(a.draining, func(d *Lease) bool { return d == l })
	default:
		l.renewAt = time.Now().Add(time.Second)
		if b.ctx.Err() == nil {
			b.cfg.Log.Warn("renewing a recalled balance lease with requests in flight", zap.String("user", a.user), zap.Error(err))
		}
	}
}
