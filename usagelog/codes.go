package usagelog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// Prepaid code statuses. Only CodeUnused, CodeRedeemed and CodeVoid are
// stored; an unused code past its expiry is shown as CodeExpired.
const (
	// CodeUnused is a code that can still be redeemed.
	CodeUnused = "unused"
	// CodeRedeemed is a code that credited a user.
	CodeRedeemed = "redeemed"
	// CodeVoid is a code the admin voided before it was redeemed.
	CodeVoid = "void"
	// CodeExpired is an unused code past its expiry.
	CodeExpired = "expired"
)

// Why a code cannot be redeemed (or voided). Each is wrapped with the
// code's ID where it is known.
var (
	// ErrCodeUnknown is a secret no code has.
	ErrCodeUnknown = errors.New("no such code")
	// ErrCodeRedeemed is a code redeemed before.
	ErrCodeRedeemed = errors.New("code already redeemed")
	// ErrCodeVoid is a code the admin voided.
	ErrCodeVoid = errors.New("code is void")
	// ErrCodeExpired is a code past its expiry.
	ErrCodeExpired = errors.New("code has expired")
)

// Code is a prepaid code as the ledger holds it: never its secret, which
// is shown once when the code is minted; only the secret's SHA-256.
type Code struct {
	// ID identifies the code in the admin API and the ledger entry it
	// makes (ref "code:<id>").
	ID string `json:"id"`
	// Hash is the lowercase hex SHA-256 of the secret. Never shown.
	Hash string `json:"-"`
	// Amount is what the code credits, in nanos of the balances'
	// currency; > 0.
	Amount money.Nanos `json:"amount"`
	// Note is the admin's label (a batch, a reseller); not shown to
	// customers.
	Note string `json:"note,omitempty"`
	// Status is CodeUnused, CodeRedeemed, CodeVoid or (computed when read)
	// CodeExpired.
	Status string `json:"status"`
	// ExpiresAt is when an unused code stops working. Nil: never.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// CreatedAt is when the code was minted, in UTC.
	CreatedAt time.Time `json:"created_at"`
	// RedeemedBy is the user the code credited.
	RedeemedBy string `json:"redeemed_by,omitempty"`
	// RedeemedAt is when it was redeemed.
	RedeemedAt *time.Time `json:"redeemed_at,omitempty"`
	// VoidedAt is when the admin voided it.
	VoidedAt *time.Time `json:"voided_at,omitempty"`
}

const codeColumns = `id, hash, amount, note, status, expires_at, created_at,
	COALESCE(redeemed_by, ''), redeemed_at, voided_at`

// scanCode reads a row of codeColumns; now decides whether an unused code
// has expired.
func scanCode(r rowScanner, now time.Time) (Code, error) {
	var (
		c                         Code
		amount, created           int64
		expires, redeemed, voided sql.NullInt64
	)
	if err := r.Scan(&c.ID, &c.Hash, &amount, &c.Note, &c.Status, &expires, &created,
		&c.RedeemedBy, &redeemed, &voided); err != nil {
		return Code{}, err
	}
	c.Amount, c.CreatedAt = money.Nanos(amount), fromNanos(created)
	c.ExpiresAt, c.RedeemedAt, c.VoidedAt = timePtr(expires), timePtr(redeemed), timePtr(voided)
	if c.Status == CodeUnused && c.ExpiresAt != nil && !now.Before(*c.ExpiresAt) {
		c.Status = CodeExpired
	}
	return c, nil
}

func timePtr(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

// MaxCodesPerMint bounds how many codes CreateCodes stores at once.
const MaxCodesPerMint = 1000

// CreateCodes stores the codes, all or none, in one transaction: each
// needs an ID, a Hash and an Amount within (0, money.MaxNanos]; Status
// becomes CodeUnused and CreatedAt now. A duplicate ID or hash gives
// ErrExists.
func (s *Store) CreateCodes(ctx context.Context, codes []Code, now time.Time) error {
	if len(codes) == 0 || len(codes) > MaxCodesPerMint {
		return fmt.Errorf("%d codes, want 1 to %d: %w", len(codes), MaxCodesPerMint, ErrInvalid)
	}
	for i := range codes {
		c := &codes[i]
		if c.ID == "" || c.Hash == "" || c.Amount <= 0 {
			return fmt.Errorf("a code needs an id, a hash and a positive amount: %w", ErrInvalid)
		}
		if err := money.CheckAmount(c.Amount); err != nil {
			return err
		}
		c.Status, c.CreatedAt = CodeUnused, now.UTC()
	}
	err := inTx(ctx, s.wr, func(tx *sql.Tx) error {
		for _, c := range codes {
			_, err := tx.ExecContext(ctx, `INSERT INTO codes (id, hash, amount, note, status, expires_at, created_at)
				VALUES (?, ?, ?, ?, 'unused', ?, ?)`,
				c.ID, c.Hash, int64(c.Amount), c.Note, nullNanos(c.ExpiresAt), unixNanos(c.CreatedAt))
			if isDuplicate(err) {
				return fmt.Errorf("code %s: %w", c.ID, ErrExists)
			}
			if err != nil {
				return fmt.Errorf("create codes: %w", err)
			}
		}
		return nil
	})
	return err
}

// GetCode returns the code with the given ID, or ErrNotFound.
func (s *Store) GetCode(ctx context.Context, id string) (Code, error) {
	c, err := scanCode(s.rd.QueryRowContext(ctx, `SELECT `+codeColumns+` FROM codes WHERE id = ?`, id), time.Now())
	if errors.Is(err, sql.ErrNoRows) {
		return Code{}, fmt.Errorf("code %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Code{}, fmt.Errorf("get code: %w", err)
	}
	return c, nil
}

// CodeQuery selects codes for ListCodes.
type CodeQuery struct {
	// Status keeps only codes with this status (as shown: CodeExpired
	// included); "" keeps all.
	Status string
	// RedeemedBy keeps only the codes a user redeemed.
	RedeemedBy string
	// After is the ID of the last code of the previous page.
	After string
	// Limit is the page size; ≤ 0 means 100.
	Limit int
}

// ListCodes returns codes newest first, a page at a time. An After no
// code has gives ErrNotFound.
func (s *Store) ListCodes(ctx context.Context, q CodeQuery) ([]Code, error) {
	return listCodes(ctx, s.rd, q, time.Now())
}

func listCodes(ctx context.Context, db querier, q CodeQuery, now time.Time) ([]Code, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	query := `SELECT ` + codeColumns + ` FROM codes WHERE 1 = 1`
	var args []any
	switch q.Status {
	case "":
	case CodeUnused:
		query += ` AND status = 'unused' AND (expires_at IS NULL OR expires_at > ?)`
		args = append(args, unixNanos(now))
	case CodeExpired:
		query += ` AND status = 'unused' AND expires_at <= ?`
		args = append(args, unixNanos(now))
	case CodeRedeemed, CodeVoid:
		query += ` AND status = ?`
		args = append(args, q.Status)
	default:
		return nil, fmt.Errorf("code status %q: %w", q.Status, ErrInvalid)
	}
	if q.RedeemedBy != "" {
		query += ` AND redeemed_by = ?`
		args = append(args, q.RedeemedBy)
	}
	if q.After != "" {
		var created int64
		err := db.QueryRowContext(ctx, `SELECT created_at FROM codes WHERE id = ?`, q.After).Scan(&created)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("code cursor %s: %w", q.After, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("list codes: %w", err)
		}
		query += ` AND (created_at, id) < (?, ?)`
		args = append(args, created, q.After)
	}
	query += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, q.Limit)
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list codes: %w", err)
	}
	defer rows.Close()
	var out []Code
	for rows.Next() {
		c, err := scanCode(rows, now)
		if err != nil {
			return nil, fmt.Errorf("list codes: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// redeemedCodes returns every code user redeemed, newest first.
func redeemedCodes(ctx context.Context, q querier, user string, now time.Time) ([]Code, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+codeColumns+` FROM codes WHERE redeemed_by = ?
		ORDER BY redeemed_at DESC, id DESC`, user)
	if err != nil {
		return nil, fmt.Errorf("redeemed codes: %w", err)
	}
	defer rows.Close()
	var out []Code
	for rows.Next() {
		c, err := scanCode(rows, now)
		if err != nil {
			return nil, fmt.Errorf("redeemed codes: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// VoidCode voids an unused (or expired) code and returns it. Voiding a
// void code again changes nothing; a redeemed code gives ErrCodeRedeemed,
// an unknown one ErrNotFound.
func (s *Store) VoidCode(ctx context.Context, id string, now time.Time) (Code, error) {
	var c Code
	err := inTx(ctx, s.wr, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE codes SET status = 'void', voided_at = ?
			WHERE id = ? AND status = 'unused'`, unixNanos(now), id); err != nil {
			return err
		}
		var err error
		c, err = scanCode(tx.QueryRowContext(ctx, `SELECT `+codeColumns+` FROM codes WHERE id = ?`, id), now)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err == nil && c.Status == CodeRedeemed {
			return ErrCodeRedeemed
		}
		return err
	})
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrCodeRedeemed) {
		return Code{}, fmt.Errorf("code %s: %w", id, err)
	}
	if err != nil {
		return Code{}, fmt.Errorf("void code: %w", err)
	}
	return c, nil
}

// CodeRef is the business key of the ledger entry a redeemed code made.
func CodeRef(id string) string { return "code:" + id }

// RedeemCode redeems the code whose secret hashes to hash for user, in one
// transaction: the code becomes redeemed by user and a pending ledger
// entry of kind "code" credits its amount (ref CodeRef(id)), to be applied
// to the Redis balance like a payment's (the repair pass applies it if the
// caller cannot). So a code is either redeemed with its credit recorded,
// or neither.
//
// Errors: ErrCodeUnknown, ErrCodeVoid, ErrCodeExpired or ErrCodeRedeemed
// for the code; ErrNotFound or ErrUserDeleted for the user;
// money.ErrAmountRange when the credit would take the ledger balance out of
// range. On any error nothing is written.
func (s *Store) RedeemCode(ctx context.Context, hash, user string, now time.Time) (Code, LedgerEntry, error) {
	var (
		c Code
		e LedgerEntry
	)
	err := inTx(ctx, s.wr, func(tx *sql.Tx) error {
		var err error
		c, err = scanCode(tx.QueryRowContext(ctx, `SELECT `+codeColumns+` FROM codes WHERE hash = ?`, hash), now)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ErrCodeUnknown
		case err != nil:
			return fmt.Errorf("redeem code: %w", err)
		}
		switch c.Status {
		case CodeRedeemed:
			return fmt.Errorf("code %s: %w", c.ID, ErrCodeRedeemed)
		case CodeVoid:
			return fmt.Errorf("code %s: %w", c.ID, ErrCodeVoid)
		case CodeExpired:
			return fmt.Errorf("code %s: %w", c.ID, ErrCodeExpired)
		}
		if err := checkLedgerEntry(ctx, tx, user, c.Amount); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE codes SET status = 'redeemed', redeemed_by = ?, redeemed_at = ?
			WHERE id = ? AND status = 'unused'`, user, unixNanos(now), c.ID)
		if err != nil {
			return fmt.Errorf("redeem code: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			// The writer is one connection, so nothing changed the row
			// since it was read; this is a guard, not a path.
			return fmt.Errorf("code %s: %w", c.ID, ErrCodeRedeemed)
		}
		ref := CodeRef(c.ID)
		res, err = tx.ExecContext(ctx, `INSERT INTO ledger (user_id, amount, kind, reason, ref, created_at, redis_applied)
			VALUES (?, ?, 'code', ?, ?, ?, 0)`, user, int64(c.Amount), "prepaid code "+c.ID, ref, unixNanos(now))
		switch {
		case isForeignKey(err):
			return fmt.Errorf("user %s: %w", user, ErrNotFound)
		case isDuplicate(err):
			return fmt.Errorf("code %s: %w", c.ID, ErrCodeRedeemed)
		case err != nil:
			return fmt.Errorf("redeem code: %w", err)
		}
		id, err := res.LastInsertId()
		e = LedgerEntry{ID: id, User: user, Amount: c.Amount, Ref: ref}
		c.Status, c.RedeemedBy = CodeRedeemed, user
		at := now.UTC()
		c.RedeemedAt = &at
		return err
	})
	if err != nil {
		return Code{}, LedgerEntry{}, err
	}
	return c, e, nil
}

// UndoRedeem takes back a redemption whose credit Redis refused (the live
// balance would leave its range): in one transaction the ledger entry is
// deleted and the code is unused again. It must never be used once the
// entry's amount reached a balance.
func (s *Store) UndoRedeem(ctx context.Context, codeID string, entry int64) error {
	return inTx(ctx, s.wr, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM ledger WHERE id = ? AND ref = ?`, entry, CodeRef(codeID))
		if err != nil {
			return fmt.Errorf("undo redeem: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return fmt.Errorf("ledger entry %d of code %s: %w", entry, codeID, ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, `UPDATE codes SET status = 'unused', redeemed_by = NULL, redeemed_at = NULL
			WHERE id = ? AND status = 'redeemed'`, codeID)
		if err != nil {
			return fmt.Errorf("undo redeem: %w", err)
		}
		return nil
	})
}
