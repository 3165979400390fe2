package accounting

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/payments"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// Every change of a balance goes the same way: the ledger entry is
// committed pending, then applied to the Redis balance together with an
// idempotency mark (billing.Accounts.ApplyCredit), then marked applied in
// the ledger. A crash between two steps leaves the entry pending, and the
// repair pass (RepairCredits) applies it once: the mark in Redis makes a
// second application a no-op.

// Credit adds amount (negative debits) to the balance of user, as a ledger
// entry of kind "credit" or "debit" with reason, applied to the live
// balance the way payments are. It returns the ledger entry.
//
// Every bound is checked before anything stays written: the amount and the
// ledger balance it makes in the ledger's transaction, the live balance in
// Redis's script. An unknown user gives usagelog.ErrNotFound, an erased one
// usagelog.ErrUserDeleted, an amount out of range money.ErrAmountRange. If
// Redis refuses the live balance, the entry is taken back and the error is
// ErrLiveRange. If Redis fails, the entry stays in the ledger, pending, and
// the error is a *RedisError: the repair pass or Reconcile applies it.
func (b *Books) Credit(ctx context.Context, user string, amount money.Nanos, reason string) (usagelog.LedgerEntry, error) {
	kind := "credit"
	if amount < 0 {
		kind = "debit"
	}
	e, err := b.store.AddPendingLedgerEntry(ctx, user, amount, kind, reason, "")
	if err != nil {
		return usagelog.LedgerEntry{}, err
	}
	err = b.accounts.ApplyCredit(ctx, e.User, e.ID, e.Amount)
	switch {
	case errors.Is(err, money.ErrAmountRange):
		// The script wrote neither the balance nor the mark. (A repair pass
		// running just now would have been refused too, unless the live
		// balance moved in between.)
		if uerr := b.store.UndoLedgerEntry(context.WithoutCancel(ctx), user, e.ID); uerr != nil {
			return usagelog.LedgerEntry{}, fmt.Errorf("redis refused the credit (%v) and taking back ledger entry %d failed: %v", err, e.ID, uerr)
		}
		return usagelog.LedgerEntry{}, ErrLiveRange
	case err != nil:
		return e, &RedisError{err}
	}
	if err := b.store.MarkApplied(ctx, e.ID); err != nil {
		// The balance has it; the repair pass marks it.
		b.log.Warn("credit applied to redis but not marked applied in the ledger; the repair pass marks it",
			zap.Int64("ledger_entry", e.ID), zap.Error(err))
	}
	return e, nil
}

// Payment is what RecordPayment did with a Stripe event.
type Payment struct {
	payments.Result
	// Duplicate is true when the event had been recorded before; nothing
	// changed.
	Duplicate bool
	// Entries is how many ledger entries the event made.
	Entries int
}

// RecordPayment applies a verified Stripe event to the ledger exactly once
// (payments.Apply, in the transaction that records the event's ID), then
// the ledger entries it made to the balances in Redis. An error means the
// ledger recorded nothing: the event may be delivered again. Once the
// ledger has the event, Redis failing is not the event's failure: it is
// logged, and the repair pass applies the entries.
func (b *Books) RecordPayment(ctx context.Context, ev payments.Event, cfg payments.Config) (Payment, error) {
	var p Payment
	entries, dup, err := b.store.StripeEvent(ctx,
		usagelog.StripeEventInfo{ID: ev.ID, Type: ev.Type, APIVersion: ev.APIVersion, Created: ev.Created},
		func(tx *usagelog.PaymentTx) (string, error) {
			var err error
			p.Result, err = payments.Apply(tx, ev, cfg)
			return p.Result.Outcome, err
		})
	if err != nil {
		return Payment{}, err
	}
	if dup {
		return Payment{Duplicate: true}, nil
	}
	p.Entries = len(entries)
	if err := b.ApplyCredits(ctx, entries); err != nil {
		b.log.Warn("payment recorded in the ledger but not yet in redis; it will be applied by the repair pass",
			zap.String("event", ev.ID), zap.Error(err))
	}
	return p, nil
}

// ApplyCredits applies committed ledger entries to the Redis balances and
// marks them applied. Each step is idempotent, so running it again for the
// same entries (repair after a crash, a concurrent repair pass) changes
// each balance once. An entry Redis refuses because the balance would leave
// ±money.MaxNanos (the ledger and Redis disagree: reconcile) stays pending
// and is logged; the entries after it are still applied.
func (b *Books) ApplyCredits(ctx context.Context, entries []usagelog.LedgerEntry) error {
	for _, e := range entries {
		err := b.accounts.ApplyCredit(ctx, e.User, e.ID, e.Amount)
		if errors.Is(err, money.ErrAmountRange) {
			b.log.Error("redis refused a ledger entry: the balance would be out of range; run reconcile",
				zap.Int64("ledger_entry", e.ID), zap.String("ref", e.Ref))
			continue
		}
		if err != nil {
			return fmt.Errorf("ledger entry %d: %w", e.ID, err)
		}
		if err := b.store.MarkApplied(ctx, e.ID); err != nil {
			return err
		}
	}
	return nil
}

// RepairCredits applies to Redis every ledger entry not yet marked applied
// (what a crash between the ledger commit and Redis left behind) and
// returns how many it handled.
func (b *Books) RepairCredits(ctx context.Context) (int, error) {
	const batch = 500
	n := 0
	var after int64
	for {
		pending, err := b.store.PendingCreditsAfter(ctx, after, batch)
		if err != nil {
			return n, err
		}
		if err := b.ApplyCredits(ctx, pending); err != nil {
			return n, err
		}
		n += len(pending)
		if len(pending) < batch {
			return n, nil
		}
		after = pending[len(pending)-1].ID
	}
}
