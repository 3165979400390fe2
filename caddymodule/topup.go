package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/payments"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// This file is the account API's top-up: POST /v1/account/topup, bounded
// by min_topup/max_topup and a per-key rate, answered with a Stripe
// Checkout URL. The session itself is made by payments.NewCheckoutSession.

// topupResponse is the answer to POST /v1/account/topup.
type topupResponse struct {
	// CheckoutURL is the Stripe Checkout page to send the customer to.
	CheckoutURL string `json:"checkout_url"`
	// ID is the Checkout Session.
	ID       string      `json:"id"`
	TopupID  string      `json:"topup_id"`
	Amount   money.Nanos `json:"amount"`
	Currency string      `json:"currency"`
}

// topupRateScript counts a key's top-ups in a fixed window (KEYS[1], ARGV[1]
// the window in ms) and returns the count with this one and the ms left in
// the window.
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

// topupRateKey names the counter of a key's top-ups, under its user's hash
// tag like the account's other keys.
func topupRateKey(user, keyID string) string { return "ait:{" + user + "}:topups:" + keyID }

// errTopupRate refuses a top-up over the key's limit.
func errTopupRate(limit int, win, reset time.Duration) *apiError {
	return &apiError{http.StatusTooManyRequests, "requests", "rate_limit_exceeded",
		"Too many top-ups: at most " + strconv.Itoa(limit) + " per " + shortDuration(win) +
			" for this key. Try again in " + formatReset(reset) + ".", ""}
}

// shortDuration writes d without zero minutes and seconds ("1h", "30m").
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// topupAllowed counts a top-up against the key's limit and, over it,
// answers 429 with Retry-After (or 503 when Redis cannot count it) and
// returns false.
func (h *AccountAPI) topupAllowed(w http.ResponseWriter, ctx context.Context, sc *StripeConfig, g billing.Grant) bool {
	limit, win := sc.topupLimit()
	if limit == 0 {
		return true
	}
	res, err := topupRateScript.Run(ctx, h.app.accounts.Client(), []string{topupRateKey(g.User, g.KeyID)},
		win.Milliseconds()).Int64Slice()
	if err != nil || len(res) != 2 {
		h.log.Error("redis unavailable; top-up refused", zap.String("key_id", g.KeyID), zap.Error(err))
		errUnavailable.write(w)
		return false
	}
	if res[0] <= int64(limit) {
		return true
	}
	reset := time.Duration(res[1]) * time.Millisecond
	h.log.Info("top-up refused: the key's top-up rate limit is reached",
		zap.String("key_id", g.KeyID), zap.Int("limit", limit), zap.Duration("window", win))
	w.Header().Set("Retry-After", strconv.FormatInt(max(int64((reset+time.Second-1)/time.Second), 1), 10))
	errTopupRate(limit, win, reset).write(w)
	return false
}

func (h *AccountAPI) topup(w http.ResponseWriter, r *http.Request, g billing.Grant) {
	user := g.User
	sc := h.app.Stripe
	if sc == nil || sc.api == nil {
		errTopupUnavailable.write(w)
		return
	}
	if h.app.ledger == nil {
		h.log.Error("top-up refused: this node has no aitoken database to record it")
		errUnavailable.write(w)
		return
	}
	var in struct {
		Amount *money.Nanos `json:"amount"`
		// Currency, when given, must be the gateway's: a client that
		// expects another currency is told, not charged in this one.
		Currency *string `json:"currency"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAccountBody+1))
	switch {
	case err != nil:
		errInvalidRequest("could not read the request body", "").write(w)
		return
	case len(body) > maxAccountBody:
		errTooLarge.write(w)
		return
	}
	if err := json.Unmarshal(body, &in); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.Is(err, money.ErrBadAmount) || errors.Is(err, money.ErrAmountRange) ||
			errors.As(err, &typeErr) && typeErr.Field == "amount" {
			errInvalidRequest(`amount must be a decimal string like "20.00"`, "amount").write(w)
			return
		}
		errInvalidRequest("the request body is not a valid JSON object", "").write(w)
		return
	}
	cur := h.app.Currency
	if in.Amount == nil {
		errInvalidRequest(`you must provide an amount, a decimal string like "20.00"`, "amount").write(w)
		return
	}
	if in.Currency != nil && !strings.EqualFold(*in.Currency, cur) {
		errInvalidRequest("currency must be "+cur+", the only currency of this gateway's balances", "currency").write(w)
		return
	}
	amount := *in.Amount
	if amount < sc.MinTopup {
		errInvalidRequest("amount must be at least "+trimAmount(sc.MinTopup)+" "+cur, "amount").write(w)
		return
	}
	if amount > sc.MaxTopup {
		errInvalidRequest("amount must be at most "+trimAmount(sc.MaxTopup)+" "+cur, "amount").write(w)
		return
	}
	minor, err := payments.NanosToMinor(amount, cur)
	if err != nil {
		errInvalidRequest("amount has more decimal places than "+cur+" allows", "amount").write(w)
		return
	}

	if !h.topupAllowed(w, r.Context(), sc, g) {
		return
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), stripeAPITimeout+5*time.Second)
	defer cancel()
	store := h.app.ledger.store
	t := &usagelog.Payment{TopupID: billing.NewID("tu_"), User: user, AmountMinor: minor, Currency: cur}
	if err := store.CreateTopup(ctx, t); err != nil {
		h.log.Error("recording a top-up failed", zap.String("user", user), zap.Error(err))
		errUnavailable.write(w)
		return
	}
	s, err := payments.NewCheckoutSession(ctx, sc.api, payments.Topup{ID: t.TopupID, User: user, AmountMinor: minor,
		Currency: cur, SuccessURL: sc.SuccessURL, CancelURL: sc.CancelURL})
	if err != nil {
		if ferr := store.TopupFailed(ctx, t.TopupID); ferr != nil {
			h.log.Error("recording a failed top-up", zap.String("topup_id", t.TopupID), zap.Error(ferr))
		}
		var ae *payments.AmountError
		if errors.As(err, &ae) {
			errInvalidRequest(ae.Error(), "amount").write(w)
			return
		}
		h.log.Error("creating a Stripe Checkout Session failed",
			zap.String("user", user), zap.String("topup_id", t.TopupID), zap.Error(err))
		errPaymentProvider.write(w)
		return
	}
	if err := store.TopupOpened(ctx, t.TopupID, s.ID, s.PaymentIntent); err != nil {
		// The webhook finds the top-up by its metadata, or makes one.
		h.log.Error("recording a top-up's Checkout Session failed",
			zap.String("topup_id", t.TopupID), zap.String("session", s.ID), zap.Error(err))
	}
	h.log.Info("top-up started", zap.String("user", user), zap.String("topup_id", t.TopupID),
		zap.String("session", s.ID), zap.String("amount", payments.FormatMinor(minor, cur)+" "+cur))
	writeJSON(w, http.StatusOK, topupResponse{CheckoutURL: s.URL, ID: s.ID, TopupID: t.TopupID, Amount: amount, Currency: cur})
}

// trimAmount writes n without trailing zeros past two places ("5.00").
func trimAmount(n money.Nanos) string {
	s := strings.TrimRight(n.String(), "0")
	whole, frac, _ := strings.Cut(s, ".")
	for len(frac) < 2 {
		frac += "0"
	}
	return whole + "." + frac
}
