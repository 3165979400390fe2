package usagelog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// Payment kinds.
const (
	// PaymentTopup is a Checkout Session that buys credit.
	PaymentTopup = "topup"
	// PaymentRefund is one refund of (part of) a top-up's charge.
	PaymentRefund = "refund"
	// PaymentDispute is a dispute (chargeback) of a top-up's charge.
	PaymentDispute = "dispute"
)

// Payment is a record of money moving through Stripe: a top-up, a refund or
// a dispute. Payments are kept as the law requires, also after a user is
// erased.
type Payment struct {
	// ID is the row's number.
	ID int64 `json:"id"`
	// Ref is the payment's business key: "topup:<topup or session id>",
	// "refund:<charge>:<cumulative amount refunded>" or "dispute:<id>".
	Ref string `json:"ref"`
	// Kind is PaymentTopup, PaymentRefund or PaymentDispute.
	Kind string `json:"kind"`
	// User is who was (or would be) credited; empty when unknown.
	User string `json:"user"`
	// TopupID is the gateway's own top-up ID (set for top-ups started
	// through the account API).
	TopupID string `json:"topup_id,omitempty"`
	// SessionID is the Stripe Checkout Session.
	SessionID string `json:"session_id,omitempty"`
	// PaymentIntent is the Stripe PaymentIntent.
	PaymentIntent string `json:"payment_intent,omitempty"`
	// ChargeID is the Stripe Charge of a refund or dispute.
	ChargeID string `json:"charge_id,omitempty"`
	// DisputeID is the Stripe Dispute.
	DisputeID string `json:"dispute_id,omitempty"`
	// AmountMinor is the amount Stripe moved, in the currency's minor unit
	// (cents; whole yen for JPY).
	AmountMinor int64 `json:"amount_minor"`
	// Currency is the upper-case ISO code of AmountMinor.
	Currency string `json:"currency"`
	// Credited is what the payment changed on the balance so far, in nanos
	// of the gateway's currency (negative for refunds and disputes).
	Credited money.Nanos `json:"credited"`
	// Status is where the payment stands, e.g. "open", "pending", "paid",
	// "currency_mismatch", "refunded", "needs_response", "won", "lost".
	Status string `json:"status"`
	// EventID is the Stripe event that last changed the record.
	EventID string `json:"event_id,omitempty"`
	// CreatedAt and UpdatedAt are in UTC.
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

const paymentCols = `id, ref, kind, user_id, topup_id, session_id, payment_intent, charge_id, dispute_id,
	amount, currency, credited, status, event_id, created_at, updated_at`

type rowScanner interface{ Scan(dest ...any) error }

func scanPayment(r rowScanner) (Payment, error) {
	var (
		p                Payment
		credited         int64
		created, updated int64
	)
	err := r.Scan(&p.ID, &p.Ref, &p.Kind, &p.User, &p.TopupID, &p.SessionID, &p.PaymentIntent, &p.ChargeID,
		&p.DisputeID, &p.AmountMinor, &p.Currency, &credited, &p.Status, &p.EventID, &created, &updated)
	p.Credited = money.Nanos(credited)
	p.CreatedAt, p.UpdatedAt = fromNanos(created), fromNanos(updated)
	return p, err
}

// putPayment inserts p, or updates the payment with p's Ref, and sets p's
// ID and times.
func putPayment(ctx context.Context, q querier, p *Payment, now time.Time) error {
	if p.Ref == "" || p.Kind == "" || p.Status == "" {
		return fmt.Errorf("payment needs a ref, kind and status: %w", ErrInvalid)
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = now
	}
	p.UpdatedAt = now
	var created int64
	err := q.QueryRowContext(ctx, `
		INSERT INTO payments (ref, kind, user_id, topup_id, session_id, payment_intent, charge_id, dispute_id,
			amount, currency, credited, status, event_id, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (ref) DO UPDATE SET
			user_id = excluded.user_id, topup_id = excluded.topup_id, session_id = excluded.session_id,
			payment_intent = excluded.payment_intent, charge_id = excluded.charge_id,
			dispute_id = excluded.dispute_id, amount = excluded.amount, currency = excluded.currency,
			credited = excluded.credited, status = excluded.status, event_id = excluded.event_id,
			updated_at = excluded.updated_at
		RETURNING id, created_at`,
		p.Ref, p.Kind, p.User, p.TopupID, p.SessionID, p.PaymentIntent, p.ChargeID, p.DisputeID,
		p.AmountMinor, strings.ToUpper(p.Currency), int64(p.Credited), p.Status, p.EventID,
		unixNanos(p.CreatedAt), unixNanos(now)).Scan(&p.ID, &created)
	if isDuplicate(err) {
		return fmt.Errorf("payment %s: session %s: %w", p.Ref, p.SessionID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("put payment: %w", err)
	}
	p.CreatedAt = fromNanos(created)
	return nil
}

// CreateTopup records a top-up the account API is about to start: a
// payment of kind PaymentTopup with status "creating" and Ref
// "topup:<TopupID>". It fills ID and times.
func (s *Store) CreateTopup(ctx context.Context, p *Payment) error {
	if p.TopupID == "" || p.User == "" {
		return fmt.Errorf("top-up needs an id and a user: %w", ErrInvalid)
	}
	p.Kind, p.Ref, p.Status = PaymentTopup, "topup:"+p.TopupID, "creating"
	return putPayment(ctx, s.wr, p, time.Now().UTC())
}

// TopupOpened records the Checkout Session made for the top-up topupID (and
// its PaymentIntent, if Stripe made one yet). A top-up still "creating"
// becomes "open"; one a webhook already moved on keeps its status.
func (s *Store) TopupOpened(ctx context.Context, topupID, sessionID, paymentIntent string) error {
	_, err := s.wr.ExecContext(ctx, `
		UPDATE payments SET session_id = ?,
			payment_intent = CASE WHEN payment_intent = '' THEN ? ELSE payment_intent END,
			status = CASE WHEN status = 'creating' THEN 'open' ELSE status END,
			updated_at = ?
		WHERE ref = ?`, sessionID, paymentIntent, time.Now().UnixNano(), "topup:"+topupID)
	if isDuplicate(err) {
		return fmt.Errorf("session %s: %w", sessionID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("top-up opened: %w", err)
	}
	return nil
}

// TopupFailed marks a top-up whose Checkout Session could not be made.
func (s *Store) TopupFailed(ctx context.Context, topupID string) error {
	_, err := s.wr.ExecContext(ctx, `UPDATE payments SET status = 'error', updated_at = ?
		WHERE ref = ? AND status = 'creating'`, time.Now().UnixNano(), "topup:"+topupID)
	if err != nil {
		return fmt.Errorf("top-up failed: %w", err)
	}
	return nil
}

// ListPayments returns payments, newest first: the user's, or everyone's
// when user is empty. limit ≤ 0 means 100.
func (s *Store) ListPayments(ctx context.Context, user string, limit int) ([]Payment, error) {
	if limit <= 0 {
		limit = 100
	}
	q := `SELECT ` + paymentCols + ` FROM payments`
	args := []any{}
	if user != "" {
		q += ` WHERE user_id = ?`
		args = append(args, user)
	}
	q += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, limit)
	return queryPayments(ctx, s.rd, q, args...)
}

// StripeEventInfo identifies a Stripe event.
type StripeEventInfo struct {
	ID         string
	Type       string
	APIVersion string
	// Created is Stripe's creation time of the event, Unix seconds.
	Created int64
}

// LedgerEntry is a ledger entry a payment or an admin credit made, to be
// applied to the balance in Redis.
type LedgerEntry struct {
	ID     int64
	User   string
	Amount money.Nanos
	Ref    string
}

// StripeEvent applies a Stripe event exactly once: in one transaction it
// records the event's ID and runs fn, which makes the event's changes
// through tx and returns a short outcome stored with the event. It returns
// the ledger entries fn made (not yet applied to Redis), or dup = true,
// changing nothing, when the event was applied before. When fn fails,
// nothing is recorded and the event can be tried again.
func (s *Store) StripeEvent(ctx context.Context, ev StripeEventInfo, fn func(tx *PaymentTx) (string, error)) (entries []LedgerEntry, dup bool, err error) {
	if ev.ID == "" {
		return nil, false, fmt.Errorf("stripe event without an id: %w", ErrInvalid)
	}
	now := time.Now().UTC()
	err = inTx(ctx, s.wr, func(sqlTx *sql.Tx) error {
		res, err := sqlTx.ExecContext(ctx, `INSERT INTO stripe_events (id, type, api_version, created, received_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
			ev.ID, ev.Type, ev.APIVersion, ev.Created, unixNanos(now))
		if err != nil {
			return fmt.Errorf("record stripe event: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			dup = err == nil
			return errSkip
		}
		tx := &PaymentTx{ctx: ctx, tx: sqlTx, now: now, eventID: ev.ID}
		outcome, err := fn(tx)
		if err != nil {
			return err
		}
		if _, err := sqlTx.ExecContext(ctx, `UPDATE stripe_events SET outcome = ? WHERE id = ?`, outcome, ev.ID); err != nil {
			return fmt.Errorf("record stripe event: %w", err)
		}
		entries = tx.entries
		return nil
	})
	if errors.Is(err, errSkip) {
		return nil, dup, nil
	}
	if err != nil {
		return nil, false, err
	}
	return entries, false, nil
}

// errSkip rolls back a transaction that has nothing to do.
var errSkip = errors.New("skip")

// StripeEventOutcome returns the recorded outcome of a Stripe event, or
// ErrNotFound.
func (s *Store) StripeEventOutcome(ctx context.Context, id string) (string, error) {
	var outcome string
	err := s.rd.QueryRowContext(ctx, `SELECT outcome FROM stripe_events WHERE id = ?`, id).Scan(&outcome)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("stripe event %s: %w", id, ErrNotFound)
	}
	return outcome, err
}

// PendingCredits returns up to limit ledger entries made by payments whose
// amounts are not yet known to be in the Redis balance, oldest first.
// limit ≤ 0 means 1000.
func (s *Store) PendingCredits(ctx context.Context, limit int) ([]LedgerEntry, error) {
	return s.PendingCreditsAfter(ctx, 0, limit)
}

// PendingCreditsAfter is PendingCredits from the entry after the ledger
// entry ID after: a pass over every pending entry pages with it, so that
// an entry it cannot apply does not hide the ones after it.
func (s *Store) PendingCreditsAfter(ctx context.Context, after int64, limit int) ([]LedgerEntry, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.rd.QueryContext(ctx, `SELECT id, user_id, amount, COALESCE(ref, '') FROM ledger
		WHERE redis_applied = 0 AND id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("pending credits: %w", err)
	}
	defer rows.Close()
	var out []LedgerEntry
	for rows.Next() {
		var e LedgerEntry
		var amount int64
		if err := rows.Scan(&e.ID, &e.User, &amount, &e.Ref); err != nil {
			return nil, fmt.Errorf("pending credits: %w", err)
		}
		e.Amount = money.Nanos(amount)
		out = append(out, e)
	}
	return out, rows.Err()
}

// MarkApplied records that the ledger entries' amounts are in the Redis
// balance. Marking an entry twice is harmless.
func (s *Store) MarkApplied(ctx context.Context, ids ...int64) error {
	for _, id := range ids {
		if _, err := s.wr.ExecContext(ctx, `UPDATE ledger SET redis_applied = 1 WHERE id = ? AND redis_applied = 0`, id); err != nil {
			return fmt.Errorf("mark ledger entry %d applied: %w", id, err)
		}
	}
	return nil
}

// MarkAllApplied marks every ledger entry as applied to Redis and returns
// how many were pending. Call it just before Redis balances are rebuilt from
// the ledger (seeding, reconcile with apply): the rebuilt balances include
// every entry, so none may be applied again afterwards.
func (s *Store) MarkAllApplied(ctx context.Context) (int64, error) {
	res, err := s.wr.ExecContext(ctx, `UPDATE ledger SET redis_applied = 1 WHERE redis_applied = 0`)
	if err != nil {
		return 0, fmt.Errorf("mark ledger applied: %w", err)
	}
	return res.RowsAffected()
}
