package usagelog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// Key statuses.
const (
	// KeyActive is the status of a usable key (unless it has expired).
	KeyActive = "active"
	// KeyRevoked is the status of a key that no longer works.
	KeyRevoked = "revoked"
)

// Key is an API key as the ledger holds it: the secret itself is never
// stored, only its SHA-256 hash.
type Key struct {
	// ID identifies the key in the admin API, logs and usage rows.
	ID string `json:"id"`
	// UserID is the owner, whose balance the key spends.
	UserID string `json:"user"`
	// Name is an optional label chosen by the owner.
	Name string `json:"name"`
	// Hash is the lowercase hex SHA-256 of the secret. Never shown.
	Hash string `json:"-"`
	// Prefix is the first characters of the secret, shown to humans so they
	// can tell keys apart.
	Prefix string `json:"prefix"`
	// Models the key may use. Empty: every model the route allows.
	Models []string `json:"models,omitempty"`
	// RPM is the request-per-minute limit. 0: unlimited.
	RPM int64 `json:"rpm"`
	// TPM is the token-per-minute limit. 0: unlimited.
	TPM int64 `json:"tpm"`
	// AllowedIPs are the client IPs or CIDR ranges the key may be used
	// from. Empty: any.
	AllowedIPs []string `json:"allowed_ips,omitempty"`
	// ExpiresAt is when the key stops working. Nil: never.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Status is "active" or "revoked". Default: "active".
	Status string `json:"status"`
	// CreatedAt is when the key was made, in UTC. Default: now.
	CreatedAt time.Time `json:"created_at"`
	// RevokedAt is when the key was revoked. Nil while active.
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

const keyColumns = `id, user_id, name, hash, prefix, models, rpm, tpm, allowed_ips,
	expires_at, status, created_at, revoked_at`

// CreateKey stores k. ID and Hash are required (ErrInvalid); Status defaults
// to "active" and CreatedAt to now. It reports ErrNotFound when the user
// does not exist or is deleted, and ErrExists when the ID or the hash is
// already stored.
func (s *Store) CreateKey(ctx context.Context, k Key) error {
	if k.ID == "" || k.Hash == "" {
		return fmt.Errorf("key needs an id and a hash: %w", ErrInvalid)
	}
	if k.Status == "" {
		k.Status = KeyActive
	}
	if k.Status != KeyActive && k.Status != KeyRevoked {
		return fmt.Errorf("key status %q: %w", k.Status, ErrInvalid)
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	models, err := encodeList(k.Models)
	if err != nil {
		return err
	}
	ips, err := encodeList(k.AllowedIPs)
	if err != nil {
		return err
	}
	// INSERT ... SELECT refuses deleted users in the same statement, with no
	// window between a check and the insert.
	res, err := s.wr.ExecContext(ctx, `INSERT INTO keys (`+keyColumns+`)
		SELECT ?, id, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM users WHERE id = ? AND status = 'active'`,
		k.ID, k.Name, k.Hash, k.Prefix, models, k.RPM, k.TPM, ips,
		nullNanos(k.ExpiresAt), k.Status, unixNanos(k.CreatedAt), nullNanos(k.RevokedAt), k.UserID)
	if isDuplicate(err) {
		return fmt.Errorf("key %s: %w", k.ID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("user %s: %w", k.UserID, ErrNotFound)
	}
	return nil
}

// GetKey returns the key with the given ID, or ErrNotFound.
func (s *Store) GetKey(ctx context.Context, id string) (Key, error) {
	return getKey(ctx, s.rd, id)
}

// ListKeys returns the user's keys, revoked ones included, oldest first. A
// user with no keys (or no such user) gives an empty list.
func (s *Store) ListKeys(ctx context.Context, userID string) ([]Key, error) {
	return queryKeys(ctx, s.rd, `SELECT `+keyColumns+` FROM keys WHERE user_id = ? ORDER BY created_at, id`, userID)
}

// ActiveKeys returns every key that is not revoked and not expired, for
// rebuilding the serving state in Redis.
func (s *Store) ActiveKeys(ctx context.Context) ([]Key, error) {
	return queryKeys(ctx, s.rd, `SELECT `+keyColumns+` FROM keys
		WHERE status = 'active' AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at, id`,
		time.Now().UnixNano())
}

// RevokeKey marks the key revoked at the given time (zero: now) and returns
// it. Revoking a revoked key changes nothing and returns it with its first
// revocation time. An unknown key gives ErrNotFound.
func (s *Store) RevokeKey(ctx context.Context, id string, at time.Time) (Key, error) {
	if at.IsZero() {
		at = time.Now()
	}
	var k Key
	err := inTx(ctx, s.wr, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`UPDATE keys SET status = 'revoked', revoked_at = ? WHERE id = ? AND status <> 'revoked'`,
			unixNanos(at), id); err != nil {
			return err
		}
		var err error
		k, err = getKey(ctx, tx, id)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return Key{}, err
	}
	if err != nil {
		return Key{}, fmt.Errorf("revoke key: %w", err)
	}
	return k, nil
}

// ErrKeyRevoked is an update of a revoked key: it stays as it was.
var ErrKeyRevoked = errors.New("key is revoked")

// UpdateKey stores the name, models, limits, allowed IPs and expiry of the
// active key k.ID and returns the key as stored. An unknown key gives
// ErrNotFound, a revoked one ErrKeyRevoked.
func (s *Store) UpdateKey(ctx context.Context, k Key) (Key, error) {
	models, err := encodeList(k.Models)
	if err != nil {
		return Key{}, err
	}
	ips, err := encodeList(k.AllowedIPs)
	if err != nil {
		return Key{}, err
	}
	var out Key
	err = inTx(ctx, s.wr, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE keys SET name = ?, models = ?, rpm = ?, tpm = ?, allowed_ips = ?, expires_at = ?
			WHERE id = ? AND status = 'active'`, k.Name, models, k.RPM, k.TPM, ips, nullNanos(k.ExpiresAt), k.ID)
		if err != nil {
			return err
		}
		if out, err = getKey(ctx, tx, k.ID); err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrKeyRevoked
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrKeyRevoked) {
		return Key{}, fmt.Errorf("key %s: %w", k.ID, err)
	}
	if err != nil {
		return Key{}, fmt.Errorf("update key: %w", err)
	}
	return out, nil
}

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func getKey(ctx context.Context, q querier, id string) (Key, error) {
	k, err := scanKey(q.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM keys WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, fmt.Errorf("key %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Key{}, fmt.Errorf("get key: %w", err)
	}
	return k, nil
}

func queryKeys(ctx context.Context, q querier, query string, args ...any) ([]Key, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	defer rows.Close()
	var keys []Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return keys, nil
}

func scanKey(row interface{ Scan(...any) error }) (Key, error) {
	var (
		k                Key
		models, ips      string
		expires, revoked sql.NullInt64
		created          int64
	)
	err := row.Scan(&k.ID, &k.UserID, &k.Name, &k.Hash, &k.Prefix, &models, &k.RPM, &k.TPM, &ips,
		&expires, &k.Status, &created, &revoked)
	if err != nil {
		return Key{}, err
	}
	if k.Models, err = decodeList(models); err != nil {
		return Key{}, err
	}
	if k.AllowedIPs, err = decodeList(ips); err != nil {
		return Key{}, err
	}
	k.ExpiresAt = fromNullNanos(expires)
	k.RevokedAt = fromNullNanos(revoked)
	k.CreatedAt = fromNanos(created)
	return k, nil
}

// encodeList stores a string list as a JSON array; nil and empty are "[]".
func encodeList(l []string) (string, error) {
	if len(l) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(l)
	if err != nil {
		return "", fmt.Errorf("encode list: %w", err)
	}
	return string(b), nil
}

// decodeList reads a JSON array; an empty array gives a nil slice.
func decodeList(s string) ([]string, error) {
	var l []string
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil, fmt.Errorf("decode list: %w", err)
	}
	if len(l) == 0 {
		return nil, nil
	}
	return l, nil
}

// AllKeys returns every key, revoked and expired ones included, for
// comparing the ledger with Redis.
func (s *Store) AllKeys(ctx context.Context) ([]Key, error) {
	return queryKeys(ctx, s.rd, `SELECT `+keyColumns+` FROM keys ORDER BY created_at, id`)
}

// CreditedTotal returns the sum of the user's ledger entries (top-ups,
// admin credits and debits, refunds, disputes) whose amount is already in
// the Redis balance: what the account was given, net. Usage roll-ups made
// by the retention job (kind "usage_rollup") are not credits and are left
// out, so the total does not move when old usage rows are purged. What the
// account has spent in its life is CreditedTotal minus its live balance;
// the account API's legacy billing endpoints report it so (see
// caddymodule/legacybilling.go). A user without entries (or no such user) gives 0.
// A total past the int64 range (rows stored before amounts were bounded)
// is cut to it rather than failing.
func (s *Store) CreditedTotal(ctx context.Context, userID string) (money.Nanos, error) {
	var w wide
	err := s.rd.QueryRowContext(ctx, `SELECT `+splitSQL("amount")+` FROM ledger
		WHERE user_id = ? AND redis_applied = 1 AND kind != 'usage_rollup'`, userID).Scan(&w.hi, &w.lo)
	if err != nil {
		return 0, fmt.Errorf("credited total: %w", err)
	}
	return saturated(w), nil
}
