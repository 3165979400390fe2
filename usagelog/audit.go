package usagelog

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
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
