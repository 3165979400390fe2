package accounting

import (
	"context"
	"errors"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// IssueKey mints an API key for k.UserID with k's name, models, limits,
// allowed IPs and expiry (the caller has checked them; allowed IPs as
// billing.NormalizeAllowedIPs writes them). It stores the key in the
// ledger (its hash, never the secret), then its record in Redis, so that
// every node accepts it. It returns the stored key and its secret, which
// exists nowhere else: show it once.
//
// An unknown or erased user gives usagelog.ErrNotFound. If Redis fails, the
// key is revoked in the ledger and the error is a *RedisError: a key that
// cannot work is never handed out.
func (b *Books) IssueKey(ctx context.Context, k usagelog.Key) (usagelog.Key, string, error) {
	secret := billing.NewKeySecret()
	k.ID = billing.NewID("key_")
	k.Hash = billing.HashKey(secret)
	k.Prefix = secret[:11]
	k.Status = usagelog.KeyActive
	k.CreatedAt = time.Now().UTC()
	k.RevokedAt = nil
	if err := b.store.CreateKey(ctx, k); err != nil {
		return usagelog.Key{}, "", err
	}
	err := b.accounts.EnsureAccount(ctx, k.UserID)
	if err == nil {
		err = b.accounts.PutKey(ctx, k.Hash, keyRecord(k, true))
	}
	if err != nil {
		// Never hand out a key that cannot work: retire it in the ledger.
		_, _ = b.store.RevokeKey(context.WithoutCancel(ctx), k.ID, time.Now())
		return usagelog.Key{}, "", &RedisError{err}
	}
	return k, secret, nil
}

// RevokeKey revokes the key id in the ledger, then in Redis, which tells
// every node at once, and returns the key. Revoking it again is safe. An
// unknown key gives usagelog.ErrNotFound. If Redis fails, the key is
// revoked in the ledger and the error is a *RedisError: the key may still
// work until the call is repeated or Reconcile applies.
func (b *Books) RevokeKey(ctx context.Context, id string) (usagelog.Key, error) {
	k, err := b.store.RevokeKey(ctx, id, time.Now().UTC())
	if err != nil {
		return usagelog.Key{}, err
	}
	if err := b.accounts.RevokeKey(ctx, k.Hash); err != nil {
		return k, &RedisError{err}
	}
	return k, nil
}

// UpdateKey stores k's name, models, limits, allowed IPs and expiry for the
// active key k.ID in the ledger, then in Redis, which tells every node at
// once, and returns the key as stored. An unknown key gives
// usagelog.ErrNotFound, a revoked one usagelog.ErrKeyRevoked. If Redis
// fails, the ledger has the change and the error is a *RedisError: the old
// settings may still apply until the update is repeated.
func (b *Books) UpdateKey(ctx context.Context, k usagelog.Key) (usagelog.Key, error) {
	stored, err := b.store.UpdateKey(ctx, k)
	if err != nil {
		return usagelog.Key{}, err
	}
	if err := b.accounts.UpdateKey(ctx, stored.Hash, keyRecord(stored, true)); err != nil {
		if errors.Is(err, billing.ErrInvalidKey) {
			// Revoked in Redis while active in the ledger: a revocation
			// that is on its way; the key no longer works either way.
			return stored, nil
		}
		return stored, &RedisError{err}
	}
	return stored, nil
}
