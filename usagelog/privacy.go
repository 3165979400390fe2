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

// Audit actions.
const (
	// AuditUserDelete records an erasure (Store.EraseUser).
	AuditUserDelete = "user.delete"
	// AuditUserExport records an export of a user's data.
	AuditUserExport = "user.export"
	// AuditRetention records a retention run that deleted something
	// (Store.Purge).
	AuditRetention = "retention.purge"
)

// AuditEntry is one line of the audit trail: an act on personal data (an
// erasure, an export) or a retention run. The trail holds user IDs and
// counts, never personal data, and is never deleted.
type AuditEntry struct {
	ID     int64     `json:"id"`
	Time   time.Time `json:"time"`
	Action string    `json:"action"`
	// User is the user acted on; empty for retention runs.
	User string `json:"user,omitempty"`
	// Detail is a JSON object describing what was done.
	Detail json.RawMessage `json:"detail"`
}

// execer is what *sql.DB and *sql.Tx have in common for writing.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func addAudit(ctx context.Context, ex execer, at time.Time, action, user string, detail any) (int64, error) {
	b, err := json.Marshal(detail)
	if err != nil {
		return 0, fmt.Errorf("audit detail: %w", err)
	}
	if detail == nil {
		b = []byte("{}")
	}
	res, err := ex.ExecContext(ctx, `INSERT INTO audit (time, action, user_id, detail) VALUES (?, ?, ?, ?)`,
		unixNanos(at), action, user, string(b))
	if err != nil {
		return 0, fmt.Errorf("add audit entry: %w", err)
	}
	return res.LastInsertId()
}

// AddAudit records an audit entry at time at (zero: now) and returns its ID.
// detail is encoded as a JSON object.
func (s *Store) AddAudit(ctx context.Context, at time.Time, action, user string, detail any) (int64, error) {
	if action == "" {
		return 0, fmt.Errorf("audit action is empty: %w", ErrInvalid)
	}
	if at.IsZero() {
		at = time.Now()
	}
	return addAudit(ctx, s.wr, at, action, user, detail)
}

// AuditQuery selects audit entries. Empty fields do not filter.
type AuditQuery struct {
	User   string
	Action string
	// Limit is the page size: 0 means 100, at most 1000.
	Limit int
	// Before is a cursor: only entries with a smaller ID are returned.
	Before int64
}

// ListAudit returns audit entries, newest first.
func (s *Store) ListAudit(ctx context.Context, q AuditQuery) ([]AuditEntry, error) {
	return listAudit(ctx, s.rd, q)
}

func listAudit(ctx context.Context, qr querier, q AuditQuery) ([]AuditEntry, error) {
	query := `SELECT id, time, action, user_id, detail FROM audit WHERE 1=1`
	var args []any
	if q.User != "" {
		query += ` AND user_id = ?`
		args = append(args, q.User)
	}
	if q.Action != "" {
		query += ` AND action = ?`
		args = append(args, q.Action)
	}
	if q.Before > 0 {
		query += ` AND id < ?`
		args = append(args, q.Before)
	}
	limit := q.Limit
	switch {
	case limit < 0: // internal callers (export): everything
		limit = -1
	case limit == 0:
		limit = 100
	case limit > MaxUsageLimit:
		limit = MaxUsageLimit
	}
	query += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := qr.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var (
			e      AuditEntry
			t      int64
			detail string
		)
		if err := rows.Scan(&e.ID, &t, &e.Action, &e.User, &detail); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.Time = fromNanos(t)
		e.Detail = json.RawMessage(detail)
		if !json.Valid(e.Detail) {
			e.Detail, _ = json.Marshal(detail)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

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
	err = tx.QueryRowContext(ctx, `SELECT id, email, name, status, created_at FROM users WHERE id = ?`, id).
		Scan(&doc.User.ID, &doc.User.Email, &doc.User.Name, &doc.User.Status, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("user %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	doc.User.CreatedAt = fromNanos(created)
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

// Erasure is what EraseUser did.
type Erasure struct {
	User     string    `json:"user"`
	ErasedAt time.Time `json:"erased_at"`
	// AlreadyDeleted is true when the user had been erased before; the
	// call then only finishes what may be left (late usage rows, keys).
	AlreadyDeleted bool `json:"already_deleted"`
	// KeysRevoked is how many active keys this call revoked.
	KeysRevoked int64 `json:"keys_revoked"`
	// UsageAnonymised is how many usage rows lost their client IP.
	UsageAnonymised int64 `json:"usage_rows_anonymised"`
	// RejectsDeleted is how many unreadable usage stream entries naming
	// the user were deleted.
	RejectsDeleted int64 `json:"usage_rejects_deleted"`
	// PaymentsKept is how many payment records remain, as the law
	// requires.
	PaymentsKept int64 `json:"payments_kept"`
	// AuditID is the audit entry recorded; 0 when nothing changed.
	AuditID int64 `json:"audit_id,omitempty"`
	// Keys are all the user's keys (now revoked), so that the caller can
	// revoke them in Redis too.
	Keys []Key `json:"-"`
}

// EraseUser erases the user's personal data in one transaction: the email
// and name are cleared and the status becomes "deleted"; every active key
// is revoked at time at, and every key's name and allowed IPs are cleared;
// usage rows keep the user ID (their cost is the user's balance) but lose
// the client IP; unreadable usage stream entries naming the user are
// deleted; payments and ledger entries are kept. An audit entry records
// the erasure. Erasing an erased user again finishes what is left and
// records an entry only when it changed something. An unknown user gives
// ErrNotFound.
func (s *Store) EraseUser(ctx context.Context, id string, at time.Time) (Erasure, error) {
	if at.IsZero() {
		at = time.Now()
	}
	e := Erasure{User: id, ErasedAt: at.UTC()}
	err := inTx(ctx, s.wr, func(tx *sql.Tx) error {
		var status string
		err := tx.QueryRowContext(ctx, `SELECT status FROM users WHERE id = ?`, id).Scan(&status)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("user %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		e.AlreadyDeleted = status == UserDeleted
		changed := !e.AlreadyDeleted
		exec := func(n *int64, query string, args ...any) error {
			res, err := tx.ExecContext(ctx, query, args...)
			if err != nil {
				return err
			}
			c, err := res.RowsAffected()
			if n != nil {
				*n = c
			}
			if c > 0 && n != nil {
				changed = true
			}
			return err
		}
		if err := exec(nil, `UPDATE users SET email = '', name = '', status = 'deleted' WHERE id = ?`, id); err != nil {
			return err
		}
		if err := exec(&e.KeysRevoked, `UPDATE keys SET status = 'revoked', revoked_at = ?
			WHERE user_id = ? AND status = 'active'`, unixNanos(at), id); err != nil {
			return err
		}
		if err := exec(nil, `UPDATE keys SET name = '', allowed_ips = '[]'
			WHERE user_id = ? AND (name != '' OR allowed_ips != '[]')`, id); err != nil {
			return err
		}
		if err := exec(&e.UsageAnonymised, `UPDATE usage SET client_ip = ''
			WHERE user_id = ? AND client_ip != ''`, id); err != nil {
			return err
		}
		userJSON, _ := json.Marshal(id)
		if err := exec(&e.RejectsDeleted, `DELETE FROM usage_rejects WHERE instr(raw, ?) > 0`,
			`"user":`+string(userJSON)); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM payments WHERE user_id = ?`, id).
			Scan(&e.PaymentsKept); err != nil {
			return err
		}
		if e.Keys, err = queryKeys(ctx, tx, `SELECT `+keyColumns+` FROM keys WHERE user_id = ? ORDER BY created_at, id`, id); err != nil {
			return err
		}
		if !changed {
			return nil
		}
		e.AuditID, err = addAudit(ctx, tx, at, AuditUserDelete, id, map[string]any{
			"already_deleted":       e.AlreadyDeleted,
			"keys_revoked":          e.KeysRevoked,
			"usage_rows_anonymised": e.UsageAnonymised,
			"usage_rejects_deleted": e.RejectsDeleted,
			"payments_kept":         e.PaymentsKept,
		})
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return Erasure{}, err
	}
	if err != nil {
		return Erasure{}, fmt.Errorf("erase user: %w", err)
	}
	return e, nil
}

// ScrubErased clears the client IP of usage rows that arrived after their
// user was erased: a request in flight at the erasure (a long stream, a
// settlement waiting in a spool) is stored after it. It covers the users
// erased at or after since (by their audit entries) and returns how many
// rows it changed. The ledger node runs it after every erasure and
// periodically; it touches only the rows of those users.
func (s *Store) ScrubErased(ctx context.Context, since time.Time) (int64, error) {
	res, err := s.wr.ExecContext(ctx, `UPDATE usage SET client_ip = ''
		WHERE client_ip != '' AND user_id IN (
			SELECT a.user_id FROM audit a JOIN users u ON u.id = a.user_id
			WHERE a.action = ? AND a.time >= ? AND u.status = 'deleted')`,
		AuditUserDelete, unixNanos(since))
	if err != nil {
		return 0, fmt.Errorf("scrub erased users: %w", err)
	}
	return res.RowsAffected()
}
