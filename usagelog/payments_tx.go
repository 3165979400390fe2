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

// PaymentTx is the transaction a Stripe event is applied in (see
// Store.StripeEvent). Everything it writes commits together with the
// event's ID, or not at all.
type PaymentTx struct {
	ctx     context.Context
	tx      *sql.Tx
	now     time.Time
	eventID string
	entries []LedgerEntry
}

// EventID is the ID of the event being applied.
func (t *PaymentTx) EventID() string { return t.eventID }

// UserStatus returns the user's status (UserActive or UserDeleted), or ""
// when the ledger does not know the user.
func (t *PaymentTx) UserStatus(id string) (string, error) {
	var status string
	err := t.tx.QueryRowContext(t.ctx, `SELECT status FROM users WHERE id = ?`, id).Scan(&status)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("user status: %w", err)
	}
	return status, nil
}

// AddLedger adds a ledger entry with the unique business key ref, to be
// applied to Redis after commit. When an entry with ref exists already it
// adds nothing and returns false. An amount outside ±money.MaxNanos, or
// one that would take the user's ledger balance out of that range (a
// balance already outside may move towards it), gives
// money.ErrAmountRange and writes nothing. Unlike Store.AddLedgerEntry
// it takes entries for erased users: a refund or dispute of what they paid
// is still booked.
func (t *PaymentTx) AddLedger(user string, amount money.Nanos, kind, reason, ref string) (bool, error) {
	if amount == 0 || kind == "" || ref == "" {
		return false, fmt.Errorf("ledger entry needs an amount, kind and ref: %w", ErrInvalid)
	}
	var n int
	if err := t.tx.QueryRowContext(t.ctx, `SELECT COUNT(*) FROM ledger WHERE ref = ?`, ref).Scan(&n); err != nil {
		return false, fmt.Errorf("add ledger entry: %w", err)
	}
	if n > 0 {
		return false, nil
	}
	if err := money.CheckAmount(amount); err != nil {
		return false, err
	}
	status, bal, err := ledgerBalance(t.ctx, t.tx, user)
	switch {
	case err != nil:
		return false, err
	case status == "":
		return false, fmt.Errorf("user %s: %w", user, ErrNotFound)
	case bal.OutOfRange():
		if (amount > 0) == (bal.Nanos > 0) {
			return false, fmt.Errorf("%w (the ledger balance of user %s is %s)", money.ErrAmountRange, user, bal.Exact)
		}
	default:
		if _, err := money.CheckCredit(bal.Nanos, amount); err != nil {
			return false, fmt.Errorf("%w (the ledger balance of user %s is %s)", err, user, bal.Nanos)
		}
	}
	var id int64
	err = t.tx.QueryRowContext(t.ctx, `
		INSERT INTO ledger (user_id, amount, kind, reason, ref, created_at, redis_applied)
		VALUES (?, ?, ?, ?, ?, ?, 0)
		ON CONFLICT (ref) DO NOTHING
		RETURNING id`, user, int64(amount), kind, reason, ref, unixNanos(t.now)).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case isForeignKey(err):
		return false, fmt.Errorf("user %s: %w", user, ErrNotFound)
	case err != nil:
		return false, fmt.Errorf("add ledger entry: %w", err)
	}
	t.entries = append(t.entries, LedgerEntry{ID: id, User: user, Amount: amount, Ref: ref})
	return true, nil
}

// Payment returns the payment with the business key ref.
func (t *PaymentTx) Payment(ref string) (Payment, bool, error) {
	return t.onePayment(`ref = ?`, ref)
}

// TopupBySession returns the top-up of a Checkout Session.
func (t *PaymentTx) TopupBySession(sessionID string) (Payment, bool, error) {
	return t.onePayment(`kind = 'topup' AND session_id = ?`, sessionID)
}

// TopupByPaymentIntent returns the top-up paid by a PaymentIntent.
func (t *PaymentTx) TopupByPaymentIntent(pi string) (Payment, bool, error) {
	if pi == "" {
		return Payment{}, false, nil
	}
	return t.onePayment(`kind = 'topup' AND payment_intent = ?`, pi)
}

func (t *PaymentTx) onePayment(where string, arg string) (Payment, bool, error) {
	p, err := scanPayment(t.tx.QueryRowContext(t.ctx,
		`SELECT `+paymentCols+` FROM payments WHERE `+where+` ORDER BY id LIMIT 1`, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return Payment{}, false, nil
	}
	if err != nil {
		return Payment{}, false, fmt.Errorf("get payment: %w", err)
	}
	return p, true, nil
}

// PutPayment inserts p or updates the payment with its Ref, recording the
// event as the last to change it.
func (t *PaymentTx) PutPayment(p *Payment) error {
	p.EventID = t.eventID
	return putPayment(t.ctx, t.tx, p, t.now)
}

// DeletePayment removes the placeholder payment with the business key ref
// (a refund that waited for its top-up and is now settled under its own
// key). Deleting a missing payment is not an error.
func (t *PaymentTx) DeletePayment(ref string) error {
	if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM payments WHERE ref = ?`, ref); err != nil {
		return fmt.Errorf("delete payment: %w", err)
	}
	return nil
}

// StripeCharge is what the ledger knows of a Stripe Charge: how much of it
// was refunded, and how much of that the balance was debited for.
type StripeCharge struct {
	ID            string
	PaymentIntent string
	// Amount is the charge's amount, minor units of Currency.
	Amount   int64
	Currency string
	// Refunded is the highest cumulative amount_refunded seen, minor units.
	Refunded int64
	// Debited is the part of Refunded the balance was debited for.
	Debited int64
}

// Charge returns the charge with the given ID.
func (t *PaymentTx) Charge(id string) (StripeCharge, bool, error) {
	cs, err := t.charges(`id = ?`, id)
	if err != nil || len(cs) == 0 {
		return StripeCharge{}, false, err
	}
	return cs[0], true, nil
}

// ChargesByPaymentIntent returns the charges of a PaymentIntent.
func (t *PaymentTx) ChargesByPaymentIntent(pi string) ([]StripeCharge, error) {
	if pi == "" {
		return nil, nil
	}
	return t.charges(`payment_intent = ?`, pi)
}

func (t *PaymentTx) charges(where, arg string) ([]StripeCharge, error) {
	rows, err := t.tx.QueryContext(t.ctx, `SELECT id, payment_intent, amount, currency, refunded, debited
		FROM stripe_charges WHERE `+where+` ORDER BY id`, arg)
	if err != nil {
		return nil, fmt.Errorf("get charges: %w", err)
	}
	defer rows.Close()
	var out []StripeCharge
	for rows.Next() {
		var c StripeCharge
		if err := rows.Scan(&c.ID, &c.PaymentIntent, &c.Amount, &c.Currency, &c.Refunded, &c.Debited); err != nil {
			return nil, fmt.Errorf("get charges: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// PutCharge inserts or replaces the charge.
func (t *PaymentTx) PutCharge(c StripeCharge) error {
	_, err := t.tx.ExecContext(t.ctx, `
		INSERT INTO stripe_charges (id, payment_intent, amount, currency, refunded, debited, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET payment_intent = excluded.payment_intent, amount = excluded.amount,
			currency = excluded.currency, refunded = excluded.refunded, debited = excluded.debited,
			updated_at = excluded.updated_at`,
		c.ID, c.PaymentIntent, c.Amount, strings.ToUpper(c.Currency), c.Refunded, c.Debited, unixNanos(t.now))
	if err != nil {
		return fmt.Errorf("put charge: %w", err)
	}
	return nil
}

// StripeDispute is what the ledger knows of a Stripe Dispute.
type StripeDispute struct {
	ID            string
	ChargeID      string
	PaymentIntent string
	// Amount is the disputed amount, minor units of Currency.
	Amount   int64
	Currency string
	// Status is Stripe's dispute status ("needs_response", "won", "lost", …).
	Status string
	// Held is what the balance is debited for the dispute, in nanos (≥ 0).
	Held money.Nanos
}

// Dispute returns the dispute with the given ID.
func (t *PaymentTx) Dispute(id string) (StripeDispute, bool, error) {
	ds, err := t.disputes(`id = ?`, id)
	if err != nil || len(ds) == 0 {
		return StripeDispute{}, false, err
	}
	return ds[0], true, nil
}

// DisputesByPaymentIntent returns the disputes of a PaymentIntent.
func (t *PaymentTx) DisputesByPaymentIntent(pi string) ([]StripeDispute, error) {
	if pi == "" {
		return nil, nil
	}
	return t.disputes(`payment_intent = ?`, pi)
}

func (t *PaymentTx) disputes(where, arg string) ([]StripeDispute, error) {
	rows, err := t.tx.QueryContext(t.ctx, `SELECT id, charge_id, payment_intent, amount, currency, status, held
		FROM stripe_disputes WHERE `+where+` ORDER BY id`, arg)
	if err != nil {
		return nil, fmt.Errorf("get disputes: %w", err)
	}
	defer rows.Close()
	var out []StripeDispute
	for rows.Next() {
		var d StripeDispute
		var held int64
		if err := rows.Scan(&d.ID, &d.ChargeID, &d.PaymentIntent, &d.Amount, &d.Currency, &d.Status, &held); err != nil {
			return nil, fmt.Errorf("get disputes: %w", err)
		}
		d.Held = money.Nanos(held)
		out = append(out, d)
	}
	return out, rows.Err()
}

// PutDispute inserts or replaces the dispute.
func (t *PaymentTx) PutDispute(d StripeDispute) error {
	_, err := t.tx.ExecContext(t.ctx, `
		INSERT INTO stripe_disputes (id, charge_id, payment_intent, amount, currency, status, held, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET charge_id = excluded.charge_id, payment_intent = excluded.payment_intent,
			amount = excluded.amount, currency = excluded.currency, status = excluded.status,
			held = excluded.held, updated_at = excluded.updated_at`,
		d.ID, d.ChargeID, d.PaymentIntent, d.Amount, strings.ToUpper(d.Currency), d.Status, int64(d.Held),
		unixNanos(t.now))
	if err != nil {
		return fmt.Errorf("put dispute: %w", err)
	}
	return nil
}
