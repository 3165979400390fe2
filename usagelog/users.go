package usagelog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// User statuses.
const (
	// UserActive is the status of a user who may hold keys and spend.
	UserActive = "active"
	// UserDeleted is the status of a user whose personal data was erased.
	UserDeleted = "deleted"
)

// User is an account that holds a balance and owns API keys.
type User struct {
	// ID is the user's identifier; CreateUser generates "u_" and 16 hex
	// digits when it is empty.
	ID string `json:"id"`
	// Email is optional contact data (personal data: erased on delete).
	Email string `json:"email"`
	// Name is an optional display name (personal data: erased on delete).
	Name string `json:"name"`
	// Status is "active" or "deleted". Default: "active".
	Status string `json:"status"`
	// CreatedAt is when the user was created, in UTC. Default: now.
	CreatedAt time.Time `json:"created_at"`
}

// CreateUser stores u, filling in the ID, status and creation time when they
// are empty, and returns the stored user. It reports ErrExists when the ID is
// taken and ErrInvalid for an unknown status.
func (s *Store) CreateUser(ctx context.Context, u User) (User, error) {
	if u.ID == "" {
		u.ID = newID("u_")
	}
	if u.Status == "" {
		u.Status = UserActive
	}
	if u.Status != UserActive && u.Status != UserDeleted {
		return User{}, fmt.Errorf("user status %q: %w", u.Status, ErrInvalid)
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now()
	}
	u.CreatedAt = fromNanos(unixNanos(u.CreatedAt))
	_, err := s.wr.ExecContext(ctx,
		`INSERT INTO users (id, email, name, status, created_at) VALUES (?, ?, ?, ?, ?)`,
		u.ID, u.Email, u.Name, u.Status, unixNanos(u.CreatedAt))
	if isDuplicate(err) {
		return User{}, fmt.Errorf("user %s: %w", u.ID, ErrExists)
	}
	if err != nil {
		return User{}, fmt.Errorf("create user: %w", err)
	}
	return u, nil
}

// GetUser returns the user with the given ID, or ErrNotFound.
func (s *Store) GetUser(ctx context.Context, id string) (User, error) {
	var (
		u       User
		created int64
	)
	err := s.rd.QueryRowContext(ctx,
		`SELECT id, email, name, status, created_at FROM users WHERE id = ?`, id).
		Scan(&u.ID, &u.Email, &u.Name, &u.Status, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, fmt.Errorf("user %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("get user: %w", err)
	}
	u.CreatedAt = fromNanos(created)
	return u, nil
}

// AddLedgerEntry records a credit (amount > 0) or debit (amount < 0) made by
// an admin or a payment, and returns the entry's ID. kind names its origin
// (for example "admin", "stripe", "refund") and must not be empty; reason is
// free text. ref is an optional business key, unique across the ledger (a
// Stripe event ID, say), which makes a retried call safe: a second entry
// with the same ref is refused with ErrExists. An unknown user gives
// ErrNotFound; a zero amount or empty kind gives ErrInvalid.
func (s *Store) AddLedgerEntry(ctx context.Context, userID string, amount billing.Nanos, kind, reason, ref string) (int64, error) {
	if amount == 0 {
		return 0, fmt.Errorf("ledger amount is zero: %w", ErrInvalid)
	}
	if kind == "" {
		return 0, fmt.Errorf("ledger kind is empty: %w", ErrInvalid)
	}
	res, err := s.wr.ExecContext(ctx,
		`INSERT INTO ledger (user_id, amount, kind, reason, ref, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		userID, int64(amount), kind, reason, nullString(ref), time.Now().UnixNano())
	switch {
	case isForeignKey(err):
		return 0, fmt.Errorf("user %s: %w", userID, ErrNotFound)
	case isDuplicate(err):
		return 0, fmt.Errorf("ledger ref %s: %w", ref, ErrExists)
	case err != nil:
		return 0, fmt.Errorf("add ledger entry: %w", err)
	}
	return res.LastInsertId()
}

// LedgerBalance returns the user's balance as the ledger says: the sum of
// the ledger entries minus the cost of the usage rows. Holds live only in
// Redis and are not included. Unknown users give ErrNotFound.
func (s *Store) LedgerBalance(ctx context.Context, userID string) (billing.Nanos, error) {
	var bal int64
	err := s.rd.QueryRowContext(ctx, `
		SELECT (SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE user_id = ?1)
		     - (SELECT COALESCE(SUM(cost), 0) FROM usage WHERE user_id = ?1)
		FROM users WHERE id = ?1`, userID).Scan(&bal)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("user %s: %w", userID, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("ledger balance: %w", err)
	}
	return billing.Nanos(bal), nil
}

// Balances returns the ledger balance of every user that is not deleted,
// for rebuilding the serving state in Redis.
func (s *Store) Balances(ctx context.Context) (map[string]billing.Nanos, error) {
	rows, err := s.rd.QueryContext(ctx, `
		SELECT u.id,
		       (SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE user_id = u.id)
		     - (SELECT COALESCE(SUM(cost), 0) FROM usage WHERE user_id = u.id)
		FROM users u WHERE u.status != 'deleted'`)
	if err != nil {
		return nil, fmt.Errorf("balances: %w", err)
	}
	defer rows.Close()
	out := make(map[string]billing.Nanos)
	for rows.Next() {
		var id string
		var bal int64
		if err := rows.Scan(&id, &bal); err != nil {
			return nil, fmt.Errorf("balances: %w", err)
		}
		out[id] = billing.Nanos(bal)
	}
	return out, rows.Err()
}
