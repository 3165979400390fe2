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

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/accounting"
	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/payments"
)

// This file is the account API's top-up: POST /v1/account/topup, bounded
// by min_topup/max_topup and a per-key rate, answered with a Stripe
// Checkout URL. The bounds, the rate and the ledger record are the workflow
// of accounting (CheckTopup, AllowTopup, StartTopup), shared with the
// dashboard.

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
	p := sc.policy()
	ok, reset, err := accounting.AllowTopup(ctx, h.app.accounts.Client(), accounting.TopupCounterKey(g.User, g.KeyID), p)
	if err != nil {
		h.log.Error("redis unavailable; top-up refused", zap.String("key_id", g.KeyID), zap.Error(err))
		errUnavailable.write(w)
		return false
	}
	if ok {
		return true
	}
	h.log.Info("top-up refused: the key's top-up rate limit is reached",
		zap.String("key_id", g.KeyID), zap.Int("limit", p.Sessions), zap.Duration("window", p.Window))
	w.Header().Set("Retry-After", strconv.FormatInt(max(int64((reset+time.Second-1)/time.Second), 1), 10))
	errTopupRate(p.Sessions, p.Window, reset).write(w)
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
	body, ok := readAccountBody(w, r)
	if !ok {
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
	p := sc.policy()
	minor, err := accounting.CheckTopup(amount, cur, p)
	var be *accounting.TopupBoundError
	switch {
	case errors.As(err, &be):
		errInvalidRequest(be.Error()+" "+cur, "amount").write(w)
		return
	case err != nil:
		errInvalidRequest("amount has more decimal places than "+cur+" allows", "amount").write(w)
		return
	}

	if !h.topupAllowed(w, r.Context(), sc, g) {
		return
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), stripeAPITimeout+5*time.Second)
	defer cancel()
	t, err := h.app.books().StartTopup(ctx, sc.api, user, minor, cur, p)
	if err != nil {
		var ae *payments.AmountError
		switch {
		case errors.As(err, &ae):
			errInvalidRequest(ae.Error(), "amount").write(w)
		case t.ID == "":
			h.log.Error("recording a top-up failed", zap.String("user", user), zap.Error(err))
			errUnavailable.write(w)
		default:
			h.log.Error("creating a Stripe Checkout Session failed",
				zap.String("user", user), zap.String("topup_id", t.ID), zap.Error(err))
			errPaymentProvider.write(w)
		}
		return
	}
	writeJSON(w, http.StatusOK, topupResponse{CheckoutURL: t.Session.URL, ID: t.Session.ID, TopupID: t.ID, Amount: amount, Currency: cur})
}

// readAccountBody reads an account API request's body, at most
// maxAccountBody bytes; when it cannot, it answers the client and ok is
// false.
func readAccountBody(w http.ResponseWriter, r *http.Request) (body []byte, ok bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAccountBody+1))
	switch {
	case err != nil:
		errInvalidRequest("could not read the request body", "").write(w)
		return nil, false
	case len(body) > maxAccountBody:
		errTooLarge.write(w)
		return nil, false
	}
	return body, true
}
