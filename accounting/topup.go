package accounting

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	checkoutsession "github.com/stripe/stripe-go/v76/checkout/session"
	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/payments"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// This file is the top-up workflow every door to it shares (the account
// API and the dashboard): the amount's bounds, the rate of top-ups, and the
// ledger record made around the Stripe Checkout Session.

// TopupPolicy is how top-ups are bounded and where Checkout sends the
// customer back.
type TopupPolicy struct {
	// Min and Max bound the amount, in the balances' currency.
	Min, Max money.Nanos
	// Sessions is how many top-ups one counter may start per Window; 0
	// means no limit.
	Sessions int
	// Window is the length of a rate window.
	Window time.Duration
	// SuccessURL and CancelURL are Checkout's return addresses.
	SuccessURL, CancelURL string
}

// TopupBoundError refuses an amount below Min or above Max.
type TopupBoundError struct {
	// Below is true for an amount under Min, false for one over Max.
	Below bool
	// Bound is the bound it crossed.
	Bound money.Nanos
}

func (e *TopupBoundError) Error() string {
	if e.Below {
		return "amount must be at least " + FormatAmount(e.Bound)
	}
	return "amount must be at most " + FormatAmount(e.Bound)
}

// ErrTopupPrecision refuses an amount with more decimal places than the
// currency has.
var ErrTopupPrecision = errors.New("amount has more decimal places than the currency allows")

// FormatAmount writes n without trailing zeros past two places ("5.00").
func FormatAmount(n money.Nanos) string {
	s := strings.TrimRight(n.String(), "0")
	whole, frac, _ := strings.Cut(s, ".")
	for len(frac) < 2 {
		frac += "0"
	}
	return whole + "." + frac
}

// CheckTopup checks amount against p's bounds and returns it in the
// currency's minor unit. Errors are a *TopupBoundError or
// ErrTopupPrecision.
func CheckTopup(amount money.Nanos, currency string, p TopupPolicy) (int64, error) {
	if amount < p.Min {
		return 0, &TopupBoundError{Below: true, Bound: p.Min}
	}
	if amount > p.Max {
		return 0, &TopupBoundError{Bound: p.Max}
	}
	minor, err := payments.NanosToMinor(amount, currency)
	if err != nil {
		return 0, ErrTopupPrecision
	}
	return minor, nil
}

// topupRateScript counts top-ups in a fixed window (KEYS[1], ARGV[1] the
// window in ms) and returns the count with this one and the ms left in the
// window.
var topupRateScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
	redis.call('PEXPIRE', KEYS[1], ARGV[1])
	ttl = tonumber(ARGV[1])
end
return {n, ttl}
`)

// TopupCounterKey names the counter of the top-ups started through one
// door of a user's (an API key's ID, say), under the account's hash tag like
// the account's other keys.
func TopupCounterKey(user, door string) string { return billing.AccountKey(user, "topups:"+door) }

// AllowTopup counts a top-up against counter (a TopupCounterKey) and p's
// rate. It returns ok = false over the limit, with the time left in the
// window; an error when Redis could not count it.
func AllowTopup(ctx context.Context, rdb redis.Scripter, counter string, p TopupPolicy) (ok bool, reset time.Duration, err error) {
	if p.Sessions <= 0 {
		return true, 0, nil
	}
	res, err := topupRateScript.Run(ctx, rdb, []string{counter}, p.Window.Milliseconds()).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("top-up rate: %d values, want 2", len(res))
	}
	if err != nil {
		return false, 0, err
	}
	if res[0] <= int64(p.Sessions) {
		return true, 0, nil
	}
	return false, time.Duration(res[1]) * time.Millisecond, nil
}

// StartedTopup is a top-up whose Checkout Session is open.
type StartedTopup struct {
	// ID is the ledger's top-up ID (tu_…).
	ID string
	// Session is Stripe's Checkout Session.
	Session payments.CheckoutSession
}

// StartTopup records a top-up of amountMinor (checked by CheckTopup) for
// user and opens its Stripe Checkout Session through api. A failure to
// record it is the ledger's error; Stripe refusing the amount is a
// *payments.AmountError; any other error is Stripe's, and the record is
// marked failed.
func (b *Books) StartTopup(ctx context.Context, api *checkoutsession.Client, user string, amountMinor int64, currency string, p TopupPolicy) (StartedTopup, error) {
	t := &usagelog.Payment{TopupID: billing.NewID("tu_"), User: user, AmountMinor: amountMinor, Currency: currency}
	if err := b.store.CreateTopup(ctx, t); err != nil {
		return StartedTopup{}, fmt.Errorf("recording a top-up: %w", err)
	}
	s, err := payments.NewCheckoutSession(ctx, api, payments.Topup{ID: t.TopupID, User: user, AmountMinor: amountMinor,
		Currency: currency, SuccessURL: p.SuccessURL, CancelURL: p.CancelURL})
	if err != nil {
		if ferr := b.store.TopupFailed(ctx, t.TopupID); ferr != nil {
			b.log.Error("recording a failed top-up", zap.String("topup_id", t.TopupID), zap.Error(ferr))
		}
		return StartedTopup{ID: t.TopupID}, err
	}
	if err := b.store.TopupOpened(ctx, t.TopupID, s.ID, s.PaymentIntent); err != nil {
		// The webhook finds the top-up by its metadata, or makes one.
		b.log.Error("recording a top-up's Checkout Session failed",
			zap.String("topup_id", t.TopupID), zap.String("session", s.ID), zap.Error(err))
	}
	b.log.Info("top-up started", zap.String("user", user), zap.String("topup_id", t.TopupID),
		zap.String("session", s.ID), zap.String("amount", payments.FormatMinor(amountMinor, currency)+" "+currency))
	return StartedTopup{ID: t.TopupID, Session: s}, nil
}
