// Package accounting runs the workflows that change the SQLite ledger (the
// system of record, package usagelog) and the live state in Redis (package
// billing) together: creating users, issuing and revoking keys, crediting,
// recording Stripe payments and repairing what a crash left between the two,
// erasing users, seeding Redis from the ledger and reconciling them. The
// admin API, the CLI, the Stripe webhook and the customers' dashboard all go
// through it, so each change is made the same way whoever asks.
//
// The ledger is always written first; Redis follows. Every workflow says
// what is left when Redis fails after the ledger was written, and how it is
// brought back in step (repeating the call, the repair pass, or Reconcile).
package accounting

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// Books are the ledger and the live accounts in Redis, kept in step. The
// zero value is not usable: call New. Books hold no state of their own, so
// one may be made per call.
type Books struct {
	store    *usagelog.Store
	accounts *billing.Accounts
	flusher  *usagelog.Flusher
	log      *zap.Logger
}

// New returns the Books over store (the ledger) and accounts (the live
// state in Redis). flusher, if not nil, moves the usage records still in
// Redis's stream into the ledger before the workflows that must see them
// all (EraseUser, Reconcile); without one they read what the ledger has.
// log receives what the workflows cannot return (a nil log discards it).
func New(store *usagelog.Store, accounts *billing.Accounts, flusher *usagelog.Flusher, log *zap.Logger) *Books {
	if log == nil {
		log = zap.NewNop()
	}
	return &Books{store: store, accounts: accounts, flusher: flusher, log: log}
}

// RedisError reports that Redis failed after the ledger was written. What
// the ledger kept, and how Redis catches up, is said by the workflow that
// returns it.
type RedisError struct {
	// Err is Redis's error.
	Err error
}

func (e *RedisError) Error() string { return "redis: " + e.Err.Error() }

// Unwrap returns Redis's error.
func (e *RedisError) Unwrap() error { return e.Err }

// ErrLiveRange refuses a credit the ledger took but that would take the
// live balance in Redis out of ±money.MaxNanos: the two disagree, and
// Reconcile makes them agree. The ledger entry was taken back. It wraps
// money.ErrAmountRange.
var ErrLiveRange = fmt.Errorf("%w (the live balance in redis would leave the range; run reconcile)", money.ErrAmountRange)

// keyRecord is the record Redis keeps of a ledger key; active says whether
// it may be used.
func keyRecord(k usagelog.Key, active bool) billing.KeyRecord {
	rec := billing.KeyRecord{ID: k.ID, User: k.UserID, Active: active, Models: k.Models,
		RPM: k.RPM, TPM: k.TPM, AllowedIPs: k.AllowedIPs}
	if k.ExpiresAt != nil {
		rec.ExpiresAt = *k.ExpiresAt
	}
	return rec
}

// flush moves the usage records still in the stream into the ledger. It
// reports how many, and none without a flusher.
func (b *Books) flush(ctx context.Context) (int, error) {
	if b.flusher == nil {
		return 0, nil
	}
	return b.flusher.FlushNow(ctx)
}

// CreateUser stores u in the ledger (see usagelog.Store.CreateUser, whose
// errors it returns) and opens its account in Redis with a zero balance. If
// Redis fails, the user is stored and the error is a *RedisError; the
// account is opened by the user's first credit or key, or by Reconcile.
func (b *Books) CreateUser(ctx context.Context, u usagelog.User) (usagelog.User, error) {
	u, err := b.store.CreateUser(ctx, u)
	if err != nil {
		return usagelog.User{}, err
	}
	if err := b.accounts.EnsureAccount(ctx, u.ID); err != nil {
		return u, &RedisError{err}
	}
	return u, nil
}
