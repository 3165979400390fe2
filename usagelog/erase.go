package usagelog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

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
	// CodesKept is how many prepaid codes the user redeemed: like
	// payments, they are kept.
	CodesKept int64 `json:"codes_kept"`
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
// deleted; payments, redeemed prepaid codes and ledger entries are kept.
// An audit entry records the erasure. Erasing an erased user again
// finishes what is left and records an entry only when it changed
// something. An unknown user gives ErrNotFound.
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
		// ip_logging = 0: rows of the user's that reach the ledger after
		// the erasure (a journal replayed days later) are stored without
		// their client IPs, like an opted-out user's.
		if err := exec(nil, `UPDATE users SET email = '', name = '', status = 'deleted',
			password_hash = '', email_verified_at = NULL, ip_logging = 0 WHERE id = ?`, id); err != nil {
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
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM codes WHERE redeemed_by = ?`, id).
			Scan(&e.CodesKept); err != nil {
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
			"codes_kept":            e.CodesKept,
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
