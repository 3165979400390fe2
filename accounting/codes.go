package accounting

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// This file is the prepaid codes' workflow, shared by the admin API (mint,
// void), the account API and the dashboard (redeem). A code is a secret
// shown once when minted and stored as its SHA-256 only; redeeming one
// credits its amount through the same idempotent path as a payment.

// MaxCodeNote bounds a code's note.
const MaxCodeNote = 200

// Mint is what MintCodes makes of one request.
type Mint struct {
	// Amount is each code's value, in (0, money.MaxNanos].
	Amount money.Nanos
	// Count is how many codes, 1 to usagelog.MaxCodesPerMint.
	Count int
	// ExpiresAt, when set, is a future time after which the codes cannot
	// be redeemed.
	ExpiresAt *time.Time
	// Note is the admin's label, at most MaxCodeNote bytes.
	Note string
}

// MintedCode is a new code with its secret, which exists only here.
type MintedCode struct {
	usagelog.Code
	// Secret is the code to hand to a customer. It is not stored.
	Secret string `json:"code"`
}

// MintError refuses a Mint, naming its field ("amount", "count",
// "expires_at" or "note").
type MintError struct {
	Field, Problem string
}

func (e *MintError) Error() string { return e.Field + ": " + e.Problem }

// CheckMint checks m's bounds before anything is written; its error is a
// *MintError.
func CheckMint(m Mint, now time.Time) error {
	switch {
	case m.Amount <= 0:
		return &MintError{"amount", "must be positive"}
	case money.CheckAmount(m.Amount) != nil:
		return &MintError{"amount", "must be at most " + money.MaxNanos.String()}
	case m.Count < 1 || m.Count > usagelog.MaxCodesPerMint:
		return &MintError{"count", fmt.Sprintf("want 1 to %d", usagelog.MaxCodesPerMint)}
	case m.ExpiresAt != nil && !m.ExpiresAt.After(now):
		return &MintError{"expires_at", "must be in the future"}
	case len(m.Note) > MaxCodeNote:
		return &MintError{"note", fmt.Sprintf("longer than %d characters", MaxCodeNote)}
	}
	return nil
}

// MintCodes makes m.Count codes of m.Amount, all stored in one
// transaction (or none), and returns them with their secrets. The bounds
// are CheckMint's.
func (b *Books) MintCodes(ctx context.Context, m Mint) ([]MintedCode, error) {
	now := time.Now().UTC()
	if err := CheckMint(m, now); err != nil {
		return nil, err
	}
	out := make([]MintedCode, m.Count)
	codes := make([]usagelog.Code, m.Count)
	for i := range codes {
		out[i].Secret = billing.NewCodeSecret()
		codes[i] = usagelog.Code{ID: billing.NewID("code_"), Hash: billing.HashKey(out[i].Secret),
			Amount: m.Amount, Note: m.Note, ExpiresAt: m.ExpiresAt}
	}
	if err := b.store.CreateCodes(ctx, codes, now); err != nil {
		return nil, err
	}
	for i := range codes {
		out[i].Code = codes[i]
	}
	b.log.Info("prepaid codes minted", zap.Int("count", m.Count), zap.String("amount", m.Amount.String()),
		zap.String("first_id", codes[0].ID))
	return out, nil
}

// Redemption is a redeemed code and the ledger entry of its credit.
type Redemption struct {
	Code  usagelog.Code
	Entry usagelog.LedgerEntry
}

// NormalizeCode is a code as a customer may have typed or pasted it, with
// the spaces around it removed.
func NormalizeCode(s string) string { return strings.TrimSpace(s) }

// RedeemCode credits user with the code secret, once: the ledger marks the
// code redeemed and records its pending credit in one transaction
// (usagelog.Store.RedeemCode, whose errors it returns: a code unknown,
// void, expired or redeemed; an unknown or erased user; a ledger balance
// out of range), then the credit goes to the Redis balance with its
// idempotency mark and is marked applied, as a payment's is.
//
// If Redis refuses the credit (the live balance would leave its range),
// the redemption is taken back whole and the error is ErrLiveRange. If
// Redis fails, the code stays redeemed with its credit pending, and the
// error is a *RedisError: the repair pass applies it.
func (b *Books) RedeemCode(ctx context.Context, user, secret string) (Redemption, error) {
	secret = NormalizeCode(secret)
	if !strings.HasPrefix(secret, billing.CodePrefix) || len(secret) > 100 {
		return Redemption{}, usagelog.ErrCodeUnknown
	}
	c, e, err := b.store.RedeemCode(ctx, billing.HashKey(secret), user, time.Now())
	if err != nil {
		return Redemption{}, err
	}
	r := Redemption{Code: c, Entry: e}
	err = b.accounts.ApplyCredit(ctx, user, e.ID, e.Amount)
	switch {
	case errors.Is(err, money.ErrAmountRange):
		if uerr := b.store.UndoRedeem(context.WithoutCancel(ctx), c.ID, e.ID); uerr != nil {
			return Redemption{}, fmt.Errorf("redis refused the credit of code %s (%v) and taking the redemption back failed: %v", c.ID, err, uerr)
		}
		return Redemption{}, ErrLiveRange
	case err != nil:
		b.log.Warn("code redeemed in the ledger but not yet in redis; the repair pass applies it",
			zap.String("code_id", c.ID), zap.Int64("ledger_entry", e.ID), zap.Error(err))
		return r, &RedisError{err}
	}
	if err := b.store.MarkApplied(ctx, e.ID); err != nil {
		b.log.Warn("code credit applied to redis but not marked applied in the ledger; the repair pass marks it",
			zap.Int64("ledger_entry", e.ID), zap.Error(err))
	}
	b.log.Info("prepaid code redeemed", zap.String("user", user), zap.String("code_id", c.ID),
		zap.String("amount", c.Amount.String()))
	return r, nil
}

// VoidCode voids an unused code (usagelog.Store.VoidCode, whose errors it
// returns).
func (b *Books) VoidCode(ctx context.Context, id string) (usagelog.Code, error) {
	c, err := b.store.VoidCode(ctx, id, time.Now())
	if err == nil {
		b.log.Info("prepaid code voided", zap.String("code_id", id))
	}
	return c, err
}

// RedeemPolicy bounds failed redeems, against guessing: after Failures
// failed attempts through one door (an API key, the dashboard) in a
// Window, further attempts are refused until the window ends.
type RedeemPolicy struct {
	Failures int
	Window   time.Duration
}

// DefaultRedeemPolicy is 10 failed redeems per hour.
var DefaultRedeemPolicy = RedeemPolicy{Failures: 10, Window: time.Hour}

// RedeemCounterKey names the counter of a user's failed redeems through
// one door, under the account's hash tag like its other keys.
func RedeemCounterKey(user, door string) string {
	return billing.AccountKey(user, "redeem_failures:"+door)
}

// redeemPeekScript returns a counter's value and the ms left in its
// window (0, 0 when there is none).
var redeemPeekScript = redis.NewScript(`
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = 0 end
return {n, ttl}
`)

// RedeemBlocked reports whether counter (a RedeemCounterKey) has reached
// p's limit, with the time left in the window; an error when Redis could
// not tell.
func RedeemBlocked(ctx context.Context, rdb redis.Scripter, counter string, p RedeemPolicy) (bool, time.Duration, error) {
	if p.Failures <= 0 {
		return false, 0, nil
	}
	res, err := redeemPeekScript.Run(ctx, rdb, []string{counter}).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("redeem failures: %d values, want 2", len(res))
	}
	if err != nil {
		return false, 0, err
	}
	return res[0] >= int64(p.Failures), time.Duration(res[1]) * time.Millisecond, nil
}

// CountRedeemFailure counts a failed redeem against counter, in p's
// window (the fixed-window counter top-ups are limited with).
func CountRedeemFailure(ctx context.Context, rdb redis.Scripter, counter string, p RedeemPolicy) error {
	if p.Failures <= 0 {
		return nil
	}
	return topupRateScript.Run(ctx, rdb, []string{counter}, p.Window.Milliseconds()).Err()
}

// RedeemFailed reports whether err is the code's fault (unknown, void,
// expired, already redeemed): the failures the rate counts.
func RedeemFailed(err error) bool {
	return errors.Is(err, usagelog.ErrCodeUnknown) || errors.Is(err, usagelog.ErrCodeVoid) ||
		errors.Is(err, usagelog.ErrCodeExpired) || errors.Is(err, usagelog.ErrCodeRedeemed)
}
