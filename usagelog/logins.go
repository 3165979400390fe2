package usagelog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// This file holds what the customers' dashboard keeps about a user beyond
// the profile: the password hash, whether the email is verified, and the
// choice to keep client IPs out of the user's usage rows.

// Login is what signing in needs to know of a user.
type Login struct {
	// User is the user's profile.
	User User
	// PasswordHash is the PHC argon2id string; "" when the user cannot
	// sign in.
	PasswordHash string
	// EmailVerifiedAt is when the email was verified; nil if it is not.
	EmailVerifiedAt *time.Time
	// IPLogging is false when the user asked that usage rows keep no
	// client IP.
	IPLogging bool
}

const loginColumns = `id, email, name, status, created_at, password_hash, email_verified_at, ip_logging`

func scanLogin(row interface{ Scan(...any) error }) (Login, error) {
	var (
		l        Login
		created  int64
		verified sql.NullInt64
	)
	if err := row.Scan(&l.User.ID, &l.User.Email, &l.User.Name, &l.User.Status, &created,
		&l.PasswordHash, &verified, &l.IPLogging); err != nil {
		return Login{}, err
	}
	l.User.CreatedAt = fromNanos(created)
	l.User.PasswordHash = l.PasswordHash
	l.EmailVerifiedAt = fromNullNanos(verified)
	return l, nil
}

// LoginByEmail returns the active user that can sign in with email
// (compared ignoring case), or ErrNotFound.
func (s *Store) LoginByEmail(ctx context.Context, email string) (Login, error) {
	l, err := scanLogin(s.rd.QueryRowContext(ctx, `SELECT `+loginColumns+` FROM users
		WHERE lower(email) = lower(?) AND password_hash != '' AND status = 'active'`, strings.TrimSpace(email)))
	if errors.Is(err, sql.ErrNoRows) {
		return Login{}, fmt.Errorf("login %q: %w", email, ErrNotFound)
	}
	if err != nil {
		return Login{}, fmt.Errorf("login by email: %w", err)
	}
	return l, nil
}

// GetLogin returns the user id with its sign-in data, or ErrNotFound.
func (s *Store) GetLogin(ctx context.Context, id string) (Login, error) {
	l, err := scanLogin(s.rd.QueryRowContext(ctx, `SELECT `+loginColumns+` FROM users WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Login{}, fmt.Errorf("user %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Login{}, fmt.Errorf("get login: %w", err)
	}
	return l, nil
}

// emailTaken reports whether an active user that can sign in has email.
func emailTaken(ctx context.Context, q querier, email string) bool {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM users
		WHERE lower(email) = lower(?) AND password_hash != '' AND status = 'active'`, email).Scan(&n)
	return err == nil && n > 0
}

// updateActiveUser runs an UPDATE of the active user id and reports
// ErrNotFound when it changed nothing, ErrExists on a taken email.
func (s *Store) updateActiveUser(ctx context.Context, id, set string, args ...any) error {
	res, err := s.wr.ExecContext(ctx, `UPDATE users SET `+set+` WHERE id = ? AND status = 'active'`,
		append(args, id)...)
	if isDuplicate(err) {
		return fmt.Errorf("email: %w", ErrExists)
	}
	if err != nil {
		return fmt.Errorf("update user: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("user %s: %w", id, ErrNotFound)
	}
	return nil
}

// SetPassword replaces the password hash of the active user id.
func (s *Store) SetPassword(ctx context.Context, id, hash string) error {
	if hash == "" {
		return fmt.Errorf("empty password hash: %w", ErrInvalid)
	}
	return s.updateActiveUser(ctx, id, `password_hash = ?`, hash)
}

// SetName replaces the display name of the active user id.
func (s *Store) SetName(ctx context.Context, id, name string) error {
	return s.updateActiveUser(ctx, id, `name = ?`, name)
}

// SetEmail replaces the email of the active user id; the new email is not
// verified. A taken email gives ErrExists.
func (s *Store) SetEmail(ctx context.Context, id, email string) error {
	return s.updateActiveUser(ctx, id, `email = ?, email_verified_at = NULL`, email)
}

// VerifyEmail marks the email of the active user id verified at, if it
// still is email (a change in between makes the link stale: ErrNotFound).
func (s *Store) VerifyEmail(ctx context.Context, id, email string, at time.Time) error {
	res, err := s.wr.ExecContext(ctx, `UPDATE users SET email_verified_at = ?
		WHERE id = ? AND status = 'active' AND lower(email) = lower(?)`, unixNanos(at), id, email)
	if err != nil {
		return fmt.Errorf("verify email: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("user %s with email %q: %w", id, email, ErrNotFound)
	}
	return nil
}

// SetIPLogging records whether the usage rows of the active user id may
// carry the client IP. Turning it off also clears the client IP of the
// rows already stored.
func (s *Store) SetIPLogging(ctx context.Context, id string, on bool) error {
	return inTx(ctx, s.wr, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET ip_logging = ? WHERE id = ? AND status = 'active'`, on, id)
		if err != nil {
			return fmt.Errorf("set ip logging: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return fmt.Errorf("user %s: %w", id, ErrNotFound)
		}
		if on {
			return nil
		}
		_, err = tx.ExecContext(ctx, `UPDATE usage SET client_ip = '' WHERE user_id = ? AND client_ip != ''`, id)
		return err
	})
}

// InvitedByEmail returns the active user with email (compared ignoring
// case) who cannot sign in yet: one an admin made, with no password (the
// oldest, if admins made several). Any other gives ErrNotFound.
func (s *Store) InvitedByEmail(ctx context.Context, email string) (User, error) {
	l, err := scanLogin(s.rd.QueryRowContext(ctx, `SELECT `+loginColumns+` FROM users
		WHERE lower(email) = lower(?) AND password_hash = '' AND status = 'active'
		ORDER BY created_at, id LIMIT 1`, strings.TrimSpace(email)))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, fmt.Errorf("invited %q: %w", email, ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("invited by email: %w", err)
	}
	return l.User, nil
}

// ClaimInvite gives the invited user id (still with email and no password)
// its password hash, its name when name is not empty, and marks the email
// verified at; otherwise ErrNotFound.
func (s *Store) ClaimInvite(ctx context.Context, id, email, hash, name string, at time.Time) error {
	if hash == "" {
		return fmt.Errorf("empty password hash: %w", ErrInvalid)
	}
	res, err := s.wr.ExecContext(ctx, `UPDATE users SET password_hash = ?, email_verified_at = ?,
			name = CASE WHEN ? = '' THEN name ELSE ? END
		WHERE id = ? AND status = 'active' AND password_hash = '' AND lower(email) = lower(?)`,
		hash, unixNanos(at), name, name, id, email)
	if isDuplicate(err) {
		return fmt.Errorf("email %q: %w", email, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("claim invite: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("invited user %s: %w", id, ErrNotFound)
	}
	return nil
}
