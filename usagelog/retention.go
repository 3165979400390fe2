package usagelog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// KindUsageRollup is the ledger kind of the entry that takes over the cost
// of usage rows the retention job deletes, so that no balance moves.
const KindUsageRollup = "usage_rollup"

// purgeChunk is how many usage rows one retention transaction deletes at
// most (ties on the last row's time may add a few): the single writer is
// never held for long, so the flusher keeps up while old rows go.
var purgeChunk = 10000

// PurgeResult is what a retention run deleted.
type PurgeResult struct {
	// UsageBefore and PaymentsBefore are the cutoffs; zero when that part
	// did not run.
	UsageBefore    time.Time `json:"usage_before,omitzero"`
	PaymentsBefore time.Time `json:"payments_before,omitzero"`
	// UsageRows is how many usage rows were deleted, and UsageCost their
	// cost, now carried by RollupEntries ledger entries of kind
	// KindUsageRollup.
	UsageRows     int64       `json:"usage_rows"`
	UsageCost     money.Nanos `json:"usage_cost"`
	RollupEntries int64       `json:"rollup_entries"`
	// UnattributedRows are deleted usage rows of user IDs the ledger does
	// not know: no balance counted them, so none is rolled up.
	UnattributedRows int64 `json:"unattributed_rows,omitempty"`
	// Rejects is how many unreadable usage stream entries were deleted.
	Rejects int64 `json:"usage_rejects"`
	// Payments, Charges, Disputes and Events are the Stripe records
	// deleted (payments rows, charge and dispute bookkeeping, event IDs).
	Payments int64 `json:"payments"`
	Charges  int64 `json:"stripe_charges"`
	Disputes int64 `json:"stripe_disputes"`
	Events   int64 `json:"stripe_events"`
	// Codes is how many prepaid codes were deleted: redeemed or voided,
	// or expired unused, before the payments cutoff.
	Codes int64 `json:"codes"`
	// AuditID is the audit entry recorded; 0 when nothing was deleted.
	AuditID int64 `json:"audit_id,omitempty"`
}

// Deleted reports whether the run deleted anything.
func (r PurgeResult) Deleted() bool {
	return r.UsageRows+r.Rejects+r.Payments+r.Charges+r.Disputes+r.Events+r.Codes > 0
}

// Purge is the retention job. It deletes the usage rows older than
// usageBefore and the unreadable stream entries received before it, and
// the payment records (payments, Stripe charges and disputes, by last
// change; Stripe event IDs, by receipt; prepaid codes by redemption,
// voiding or expiry) older than paymentsBefore. A zero
// cutoff skips its part. now is the time written on the entries it makes.
//
// Balances never move: a balance is ledger entries minus usage cost, so
// before usage rows go, their cost is folded, per user, into a ledger entry
// of kind KindUsageRollup (ref "usage_rollup:<user>:<bound>", unique per
// user and bound) in the same transaction as the delete. Usage goes in
// transactions of about purgeChunk rows, oldest first, each one whole: a
// run that stops half-way leaves every balance right. Ledger entries are
// never deleted: they are the money, while payment rows are records of it.
// A run that deleted anything is recorded in the audit trail.
func (s *Store) Purge(ctx context.Context, usageBefore, paymentsBefore, now time.Time) (PurgeResult, error) {
	res := PurgeResult{UsageBefore: usageBefore.UTC(), PaymentsBefore: paymentsBefore.UTC()}
	if !usageBefore.IsZero() {
		for done := false; !done; {
			var err error
			done, err = s.purgeUsageChunk(ctx, unixNanos(usageBefore), now, &res)
			if err != nil {
				return res, fmt.Errorf("retention: %w", err)
			}
		}
	}
	err := inTx(ctx, s.wr, func(tx *sql.Tx) error {
		del := func(n *int64, query string, args ...any) error {
			r, err := tx.ExecContext(ctx, query, args...)
			if err != nil {
				return err
			}
			*n, err = r.RowsAffected()
			return err
		}
		if !usageBefore.IsZero() {
			if err := del(&res.Rejects, `DELETE FROM usage_rejects WHERE received_at < ?`, unixNanos(usageBefore)); err != nil {
				return err
			}
		}
		if !paymentsBefore.IsZero() {
			cut := unixNanos(paymentsBefore)
			for _, d := range []struct {
				n     *int64
				query string
			}{
				{&res.Payments, `DELETE FROM payments WHERE updated_at < ?`},
				{&res.Charges, `DELETE FROM stripe_charges WHERE updated_at < ?`},
				{&res.Disputes, `DELETE FROM stripe_disputes WHERE updated_at < ?`},
				{&res.Events, `DELETE FROM stripe_events WHERE received_at < ?`},
				{&res.Codes, `DELETE FROM codes WHERE COALESCE(redeemed_at, voided_at, expires_at) < ?
					AND (status != 'unused' OR expires_at IS NOT NULL)`},
			} {
				if err := del(d.n, d.query, cut); err != nil {
					return err
				}
			}
		}
		if !res.Deleted() {
			return nil
		}
		var err error
		res.AuditID, err = addAudit(ctx, tx, now, AuditRetention, "", res)
		return err
	})
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	return res, nil
}

// purgeUsageChunk deletes the oldest usage rows before cutoff, about
// purgeChunk of them, with their roll-up entries, in one transaction. It
// reports done when no row before cutoff is left.
func (s *Store) purgeUsageChunk(ctx context.Context, cutoff int64, now time.Time, res *PurgeResult) (done bool, err error) {
	var chunk PurgeResult
	err = inTx(ctx, s.wr, func(tx *sql.Tx) error {
		// The chunk ends just after the purgeChunk-th oldest row (all rows
		// at that time go with it); with fewer rows left, at the cutoff.
		bound := cutoff
		var last int64
		err := tx.QueryRowContext(ctx, `SELECT time FROM usage WHERE time < ? ORDER BY time LIMIT 1 OFFSET ?`,
			cutoff, purgeChunk-1).Scan(&last)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			done = true
		case err != nil:
			return err
		case last+1 < cutoff:
			bound = last + 1
		default:
			done = true
		}
		var rows, cost, unattributed int64
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(cost), 0),
			COALESCE(SUM(user_id NOT IN (SELECT id FROM users)), 0) FROM usage WHERE time < ?`, bound).
			Scan(&rows, &cost, &unattributed); err != nil {
			return err
		}
		if rows == 0 {
			return nil
		}
		boundText := fromNanos(bound).Format(time.RFC3339Nano)
		r, err := tx.ExecContext(ctx, `
			INSERT INTO ledger (user_id, amount, kind, reason, ref, created_at)
			SELECT user_id, -SUM(cost), ?1,
			       'retention: ' || COUNT(*) || ' usage rows before ' || ?2 || ' deleted; their cost moved here',
			       ?1 || ':' || user_id || ':' || ?2, ?3
			FROM usage WHERE time < ?4 AND user_id IN (SELECT id FROM users)
			GROUP BY user_id HAVING SUM(cost) != 0`,
			KindUsageRollup, boundText, unixNanos(now), bound)
		if isDuplicate(err) {
			return fmt.Errorf("usage roll-up up to %s made before: %w", boundText, ErrExists)
		}
		if err != nil {
			return err
		}
		entries, err := r.RowsAffected()
		if err != nil {
			return err
		}
		r, err = tx.ExecContext(ctx, `DELETE FROM usage WHERE time < ?`, bound)
		if err != nil {
			return err
		}
		if deleted, err := r.RowsAffected(); err != nil || deleted != rows {
			return fmt.Errorf("usage purge deleted %d rows, counted %d (%v)", deleted, rows, err)
		}
		chunk = PurgeResult{UsageRows: rows, UsageCost: money.Nanos(cost), RollupEntries: entries,
			UnattributedRows: unattributed}
		return nil
	})
	if err != nil {
		return false, err
	}
	res.UsageRows += chunk.UsageRows
	res.UsageCost += chunk.UsageCost
	res.RollupEntries += chunk.RollupEntries
	res.UnattributedRows += chunk.UnattributedRows
	return done, nil
}
