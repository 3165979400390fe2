package accounting

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// EraseUser erases the personal data of user (usagelog.Store.EraseUser: one
// transaction), then revokes every key of the user in Redis, which tells
// every gateway node at once, and ends the user's dashboard sessions (a
// signed-in browser is signed out, and the addresses and browsers they
// kept are gone). It returns the erasure and how many key records it
// revoked in Redis. Usage still in the stream is moved into the
// ledger first, and again after, so the rows of requests that settle late
// lose their client IPs too (the retention job's scrub takes any later).
//
// Repeating it is safe and finishes an erasure that Redis could not
// complete. An unknown user gives usagelog.ErrNotFound. If Redis fails,
// the ledger is erased and its keys revoked there, and the error is a
// *RedisError: the keys may still work until the call is repeated or
// Reconcile applies.
func (b *Books) EraseUser(ctx context.Context, user string) (usagelog.Erasure, int, error) {
	if _, err := b.store.GetUser(ctx, user); err != nil {
		return usagelog.Erasure{}, 0, err
	}
	b.flushForPrivacy(ctx)
	e, err := b.store.EraseUser(ctx, user, time.Now().UTC())
	if err != nil {
		return usagelog.Erasure{}, 0, err
	}
	revoked := 0
	for _, k := range e.Keys {
		// The record is rewritten revoked and without its allowed IPs
		// (personal data), then the revocation is published.
		err := b.accounts.PutKey(ctx, k.Hash, billing.KeyRecord{ID: k.ID, User: k.UserID, Active: false})
		if err == nil {
			err = b.accounts.RevokeKey(ctx, k.Hash)
		}
		if err != nil {
			return e, revoked, &RedisError{err}
		}
		revoked++
	}
	if err := b.accounts.EndDashboardSessions(ctx, user); err != nil {
		return e, revoked, &RedisError{err}
	}
	// Requests admitted before the revocation may still settle: take what
	// reached the stream now.
	b.flushForPrivacy(ctx)
	if _, err := b.store.ScrubErased(ctx, e.ErasedAt); err != nil {
		b.log.Warn("clearing late client IPs after an erasure", zap.String("user", user), zap.Error(err))
	}
	return e, revoked, nil
}

// flushForPrivacy moves the records still in the usage stream into the
// ledger, so an erasure sees them. Redis being down only delays those
// records, so it is logged, not returned.
func (b *Books) flushForPrivacy(ctx context.Context) {
	if _, err := b.flush(ctx); err != nil {
		b.log.Warn("flushing the usage stream before a privacy operation", zap.Error(err))
	}
}
