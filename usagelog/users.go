package usagelog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
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
	// PasswordHash, when set, lets the user sign in to the dashboard: a
	// PHC argon2id string, never shown. Its email must then be unique
	// (ignoring case) among such users, or CreateUser reports ErrExists.
	PasswordHash string `json:"-"`
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
		`INSERT INTO users (id, email, name, status, created_at, password_hash) VALUES (?, ?, ?, ?, ?, ?)`,
		u.ID, u.Email, u.Name, u.Status, unixNanos(u.CreatedAt), u.PasswordHash)
	if isDuplicate(err) {
		if u.PasswordHash != "" && emailTaken(ctx, s.wr, u.Email) {
			return User{}, fmt.Errorf("email %q: %w", u.Email, ErrExists)
		}
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

// ErrUserDeleted reports a ledger entry for a user whose data was erased:
// the account is closed, and nothing may be credited to or debited from it.
var ErrUserDeleted = errors.New("user deleted")

// AddLedgerEntry records a credit (amount > 0) or debit (amount < 0) and
// returns the entry's ID. The entry counts as already in the Redis balance:
// use it for entries the balance is rebuilt with (seeding, reconcile), and
// AddPendingLedgerEntry for one still to be applied. kind names its origin
// (for example "admin", "stripe", "refund") and must not be empty; reason is
// free text. ref is an optional business key, unique across the ledger (a
// Stripe event ID, say), which makes a retried call safe: a second entry
// with the same ref is refused with ErrExists. An unknown user gives
// ErrNotFound, a deleted (erased) one ErrUserDeleted; a zero amount or empty
// kind gives ErrInvalid. An amount outside ±money.MaxNanos, or one that
// would take the user's ledger balance out of that range, gives
// money.ErrAmountRange. Every check is made in the transaction that
// writes the entry, and a refused entry writes nothing.
func (s *Store) AddLedgerEntry(ctx context.Context, userID string, amount money.Nanos, kind, reason, ref string) (int64, error) {
	return s.addLedgerEntry(ctx, userID, amount, kind, reason, ref, true)
}

// AddPendingLedgerEntry is AddLedgerEntry for an entry whose amount is yet
// to reach the Redis balance (an admin credit): it is written pending, as a
// payment's entries are, and returned ready to be applied with an
// idempotency mark and then marked applied (MarkApplied). An entry a crash
// leaves pending is found by PendingCredits. The checks and errors are
// AddLedgerEntry's.
func (s *Store) AddPendingLedgerEntry(ctx context.Context, userID string, amount money.Nanos, kind, reason, ref string) (LedgerEntry, error) {
	id, err := s.addLedgerEntry(ctx, userID, amount, kind, reason, ref, false)
	if err != nil {
		return LedgerEntry{}, err
	}
	return LedgerEntry{ID: id, User: userID, Amount: amount, Ref: ref}, nil
}

func (s *Store) addLedgerEntry(ctx context.Context, userID string, amount money.Nanos, kind, reason, ref string, applied bool) (int64, error) {
	if amount == 0 {
		return 0, fmt.Errorf("ledger amount is zero: %w", ErrInvalid)
	}
	if kind == "" {
		return 0, fmt.Errorf("ledger kind is empty: %w", ErrInvalid)
	}
	if err := money.CheckAmount(amount); err != nil {
		return 0, err
	}
	mark := 0
	if applied {
		mark = 1
	}
	var id int64
	err := inTx(ctx, s.wr, func(tx *sql.Tx) error {
		if err := checkLedgerEntry(ctx, tx, userID, amount); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx,
			`INSERT INTO ledger (user_id, amount, kind, reason, ref, created_at, redis_applied) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			userID, int64(amount), kind, reason, nullString(ref), time.Now().UnixNano(), mark)
		switch {
		case isForeignKey(err):
			return fmt.Errorf("user %s: %w", userID, ErrNotFound)
		case isDuplicate(err):
			return fmt.Errorf("ledger ref %s: %w", ref, ErrExists)
		case err != nil:
			return fmt.Errorf("add ledger entry: %w", err)
		}
		id, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return 0, err
	}
	return id, nil
}

// checkLedgerEntry checks, inside the transaction q that will write it, that
// a ledger entry of amount may be made for user: the user exists and is not
// deleted, and its ledger balance stays within ±money.MaxNanos (a balance
// already outside may move towards the range). Callers that write ledger
// entries in their own transactions (payments) use it the same way.
func checkLedgerEntry(ctx context.Context, q querier, user string, amount money.Nanos) error {
	status, bal, err := ledgerBalance(ctx, q, user)
	if err != nil {
		return err
	}
	switch status {
	case "":
		return fmt.Errorf("user %s: %w", user, ErrNotFound)
	case UserDeleted:
		return fmt.Errorf("user %s: %w", user, ErrUserDeleted)
	}
	if bal.OutOfRange() {
		// Clamped: a move towards the range is allowed, any other refused.
		if (amount > 0) == (bal.Nanos > 0) {
			return fmt.Errorf("%w (the ledger balance of user %s is %s)", money.ErrAmountRange, user, bal.Exact)
		}
		return nil
	}
	if _, err := money.CheckCredit(bal.Nanos, amount); err != nil {
		return fmt.Errorf("%w (the ledger balance of user %s is %s)", err, user, bal.Nanos)
	}
	return nil
}

// UndoLedgerEntry deletes the ledger entry id of user made by
// AddLedgerEntry or AddPendingLedgerEntry, for a caller whose matching change to the Redis balance
// was refused, so that the refused operation leaves nothing behind. It must
// never be used on an entry whose amount reached a balance. An unknown entry
// gives ErrNotFound.
func (s *Store) UndoLedgerEntry(ctx context.Context, userID string, id int64) error {
	res, err := s.wr.ExecContext(ctx, `DELETE FROM ledger WHERE id = ? AND user_id = ?`, id, userID)
	if err != nil {
		return fmt.Errorf("undo ledger entry: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("ledger entry %d of user %s: %w", id, userID, ErrNotFound)
	}
	return nil
}

// LedgerBalance returns the user's balance as the ledger says: the sum of
// the ledger entries minus the cost of the usage rows. Holds live only in
// Redis and are not included. Unknown users give ErrNotFound. A balance
// outside ±money.MaxNanos (stored before amounts were bounded) comes back
// clamped to the range; LedgerAmount tells it exactly.
func (s *Store) LedgerBalance(ctx context.Context, userID string) (money.Nanos, error) {
	a, err := s.LedgerAmount(ctx, userID)
	return a.Nanos, err
}

// LedgerAmount is LedgerBalance with the exact value of a balance outside
// ±money.MaxNanos. Deleted users have balances too.
func (s *Store) LedgerAmount(ctx context.Context, userID string) (Amount, error) {
	status, bal, err := ledgerBalance(ctx, s.rd, userID)
	if err != nil {
		return Amount{}, err
	}
	if status == "" {
		return Amount{}, fmt.Errorf("user %s: %w", userID, ErrNotFound)
	}
	return bal, nil
}

// Balances returns the ledger balance of every user that is not deleted,
// for rebuilding the serving state in Redis. Balances outside
// ±money.MaxNanos come back clamped to the range (AccountBalances tells
// them exactly), so that seeding Redis never fails on what the ledger
// holds.
func (s *Store) Balances(ctx context.Context) (map[string]money.Nanos, error) {
	all, err := s.AccountBalances(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]money.Nanos, len(all))
	for _, b := range all {
		out[b.User] = b.Balance.Nanos
	}
	return out, nil
}
