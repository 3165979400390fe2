package usagelog

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// LedgerRow is one ledger entry as exported: a credit, a debit, a payment's
// credit or refund, or a usage roll-up made by the retention job.
type LedgerRow struct {
	ID     int64       `json:"id"`
	Amount money.Nanos `json:"amount"`
	// Kind is the entry's origin, such as "credit", "debit", "stripe" or
	// "usage_rollup".
	Kind      string    `json:"kind"`
	Reason    string    `json:"reason"`
	Ref       string    `json:"ref,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// LedgerEntries returns the user's ledger entries, oldest first.
func (s *Store) LedgerEntries(ctx context.Context, user string) ([]LedgerRow, error) {
	return ledgerEntries(ctx, s.rd, user)
}

func ledgerEntries(ctx context.Context, q querier, user string) ([]LedgerRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, amount, kind, reason, COALESCE(ref, ''), created_at
		FROM ledger WHERE user_id = ? ORDER BY id`, user)
	if err != nil {
		return nil, fmt.Errorf("ledger entries: %w", err)
	}
	defer rows.Close()
	var out []LedgerRow
	for rows.Next() {
		var (
			e          LedgerRow
			amount, at int64
		)
		if err := rows.Scan(&e.ID, &amount, &e.Kind, &e.Reason, &e.Ref, &at); err != nil {
			return nil, fmt.Errorf("ledger entries: %w", err)
		}
		e.Amount, e.CreatedAt = money.Nanos(amount), fromNanos(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// ErrExportIncomplete wraps an error that stopped ExportUser after it had
// begun writing: what was written is not a whole JSON document.
var ErrExportIncomplete = errors.New("export incomplete")

// Export is the document ExportUser writes, less its usage rows (which it
// streams, as "usage", after the other fields).
type Export struct {
	// ExportedAt is the export's time; every part is read from one
	// snapshot of the ledger.
	ExportedAt time.Time `json:"exported_at"`
	// User is the profile.
	User User `json:"user"`
	// EmailVerifiedAt is when the user proved the email address theirs
	// (the dashboard's sign-up), or null.
	EmailVerifiedAt *time.Time `json:"email_verified_at"`
	// IPLogging is the user's choice on client IP logging: false keeps
	// none in their usage rows.
	IPLogging bool `json:"ip_logging"`
	// Balance is the ledger balance: credits minus usage (holds, which
	// live only in Redis, are not included). One outside
	// ±money.MaxNanos (stored before amounts were bounded) is clamped to
	// the range, and BalanceExact tells it.
	Balance money.Nanos `json:"ledger_balance"`
	// BalanceExact is the exact ledger balance when it lies outside
	// ±money.MaxNanos; omitted otherwise.
	BalanceExact string `json:"ledger_balance_exact,omitempty"`
	// Keys are the user's API keys: never the secret (not stored) or its
	// hash.
	Keys []Key `json:"keys"`
	// Ledger is every credit, debit and roll-up, oldest first.
	Ledger []LedgerRow `json:"ledger"`
	// Payments are the Stripe top-ups, refunds and disputes, newest first.
	Payments []Payment `json:"payments"`
	// Codes are the prepaid codes the user redeemed, newest first (never
	// their secrets, which are not stored).
	Codes []Code `json:"codes"`
	// Audit is what was done to the user's data (erasure, exports), newest
	// first.
	Audit []AuditEntry `json:"audit"`
}

// ExportUser writes to w, as one JSON object, everything the ledger holds
// about the user: the fields of Export, then every usage row (oldest first)
// as "usage". All of it is read in one read transaction, so the parts agree
// with each other. An unknown user gives ErrNotFound before anything is
// written; an error after writing began is wrapped in ErrExportIncomplete.
// now is the time stated as exported_at.
func (s *Store) ExportUser(ctx context.Context, id string, now time.Time, w io.Writer) error {
	tx, err := s.rd.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer tx.Rollback()

	doc := Export{ExportedAt: now.UTC()}
	var created int64
	var verified sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT id, email, name, status, created_at, email_verified_at, ip_logging
		FROM users WHERE id = ?`, id).
		Scan(&doc.User.ID, &doc.User.Email, &doc.User.Name, &doc.User.Status, &created, &verified, &doc.IPLogging)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("user %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	doc.User.CreatedAt = fromNanos(created)
	if verified.Valid {
		at := fromNanos(verified.Int64)
		doc.EmailVerifiedAt = &at
	}
	_, bal, err := ledgerBalance(ctx, tx, id)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	doc.Balance, doc.BalanceExact = bal.Nanos, bal.Exact
	if doc.Keys, err = queryKeys(ctx, tx, `SELECT `+keyColumns+` FROM keys WHERE user_id = ? ORDER BY created_at, id`, id); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if doc.Ledger, err = ledgerEntries(ctx, tx, id); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if doc.Payments, err = queryPayments(ctx, tx, `SELECT `+paymentCols+` FROM payments WHERE user_id = ?
		ORDER BY created_at DESC, id DESC`, id); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if doc.Codes, err = redeemedCodes(ctx, tx, id, now); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if doc.Audit, err = listAudit(ctx, tx, AuditQuery{User: id, Limit: -1}); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if doc.Keys == nil {
		doc.Keys = []Key{}
	}
	if doc.Ledger == nil {
		doc.Ledger = []LedgerRow{}
	}
	if doc.Payments == nil {
		doc.Payments = []Payment{}
	}
	if doc.Audit == nil {
		doc.Audit = []AuditEntry{}
	}
	if doc.Codes == nil {
		doc.Codes = []Code{}
	}
	head, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+usageColumns+` FROM usage WHERE user_id = ? ORDER BY time, request_id`, id)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer rows.Close()

	// From here on the document is being written.
	bw := bufio.NewWriterSize(w, 64<<10)
	fail := func(err error) error { return fmt.Errorf("%w: %w", ErrExportIncomplete, err) }
	bw.Write(head[:len(head)-1]) // without the closing brace
	bw.WriteString(`,"usage":[`)
	enc := json.NewEncoder(bw)
	for n := 0; rows.Next(); n++ {
		r, err := scanUsage(rows)
		if err != nil {
			return fail(err)
		}
		if n > 0 {
			bw.WriteByte(',')
		}
		if err := enc.Encode(r); err != nil { // Encode adds a newline: valid JSON whitespace
			return fail(err)
		}
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	bw.WriteString("]}\n")
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	return nil
}

// scanUsage reads one row selected with usageColumns.
func scanUsage(row interface{ Scan(...any) error }) (Record, error) {
	var (
		r       Record
		t, cost int64
	)
	if err := row.Scan(&r.RequestID, &t, &r.User, &r.KeyID, &r.Model, &r.Endpoint, &r.Stream,
		&r.Status, &r.Outcome, &r.InputTokens, &r.CachedInputTokens, &r.CacheWriteTokens,
		&r.OutputTokens, &r.ReasoningTokens, &cost, &r.Currency, &r.Estimated, &r.DurationMS,
		&r.TTFTMS, &r.ClientIP, &r.Clamped); err != nil {
		return Record{}, err
	}
	r.Time = fromNanos(t)
	r.Cost = money.Nanos(cost)
	return r, nil
}

func queryPayments(ctx context.Context, q querier, query string, args ...any) ([]Payment, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list payments: %w", err)
	}
	defer rows.Close()
	var out []Payment
	for rows.Next() {
		p, err := scanPayment(rows)
		if err != nil {
			return nil, fmt.Errorf("list payments: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}
