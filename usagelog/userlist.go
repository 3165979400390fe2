package usagelog

import (
	"context"
	"fmt"
	"strings"
)

// UserQuery selects users for ListUsers. Empty fields do not filter.
type UserQuery struct {
	// Email matches a user's email exactly, ignoring letter case.
	Email string
	// Status is "active" or "deleted".
	Status string
	// Limit is the page size, 1 to MaxUsageLimit.
	Limit int
	// After is the ID of the last user of the previous page.
	After string
}

// ListUsers returns a page of users in ID order. It reports ErrInvalid
// for an unknown status or a limit out of range.
func (s *Store) ListUsers(ctx context.Context, q UserQuery) ([]User, error) {
	if q.Status != "" && q.Status != UserActive && q.Status != UserDeleted {
		return nil, fmt.Errorf("user status %q: %w", q.Status, ErrInvalid)
	}
	if q.Limit < 1 || q.Limit > MaxUsageLimit {
		return nil, fmt.Errorf("limit %d: %w", q.Limit, ErrInvalid)
	}
	where, args := []string{"id > ?"}, []any{q.After}
	if q.Email != "" {
		where, args = append(where, "lower(email) = lower(?)"), append(args, q.Email)
	}
	if q.Status != "" {
		where, args = append(where, "status = ?"), append(args, q.Status)
	}
	rows, err := s.rd.QueryContext(ctx, `SELECT id, email, name, status, created_at FROM users
		WHERE `+strings.Join(where, " AND ")+` ORDER BY id LIMIT ?`, append(args, q.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	out := []User{}
	for rows.Next() {
		var (
			u       User
			created int64
		)
		if err := rows.Scan(&u.ID, &u.Email, &u.Name, &u.Status, &created); err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		u.CreatedAt = fromNanos(created)
		out = append(out, u)
	}
	return out, rows.Err()
}
