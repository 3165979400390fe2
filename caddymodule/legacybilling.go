package caddymodule

import (
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// The legacy billing pair (GET /v1/dashboard/billing/subscription and
// /usage, with or without /v1) is what chat clients such as NextChat
// (ChatGPT-Next-Web) and chatgpt-web read to show a balance, and what
// balance checkers compute "remaining = hard_limit_usd − total_usage/100"
// from. The numbers follow one-api and new-api, the relays those clients
// are used with, so that this sum is the balance whatever dates the client
// asks for:
//
//	hard_limit_usd (= soft_limit_usd = system_hard_limit_usd)
//	    what the account was credited in its life, net (top-ups, admin
//	    credits and debits, refunds), in currency units
//	total_usage
//	    what the account has spent in its life, in cents (hundredths of
//	    the currency unit): credited − balance
//
// start_date and end_date are checked (YYYY-MM-DD) but do not narrow the
// total, as in one-api and new-api; GET /v1/account/usage?from=&to= gives
// the exact records of a period. These are floats, at this legacy edge
// only: every other answer gives money as exact decimal strings. The
// amounts are in the configured currency, whatever the "_usd" names say.
// On a gateway node without the ledger the credited total is unknown:
// there hard_limit_usd is the balance and total_usage is 0 (the sum still
// gives the balance).

// legacyTotals returns the caller's balance and lifetime spend.
func (h *AccountAPI) legacyTotals(w http.ResponseWriter, r *http.Request, user string) (balance, used money.Nanos, ok bool) {
	bal, _, err := h.app.accounts.Balance(r.Context(), user)
	if err != nil {
		h.log.Error("redis unavailable; account request refused", zap.Error(err))
		errUnavailable.write(w)
		return 0, 0, false
	}
	if h.app.ledger == nil {
		return bal, 0, true
	}
	credited, err := h.app.ledger.store.CreditedTotal(r.Context(), user)
	if err != nil {
		h.log.Error("reading the ledger for the account API", zap.String("user", user), zap.Error(err))
		errUnavailable.write(w)
		return 0, 0, false
	}
	// A credit that reached Redis but is not yet marked applied in the
	// ledger would make this negative for a moment.
	return bal, max(credited-bal, 0), true
}

// units converts nanos to a float number of currency units.
func units(n money.Nanos) float64 { return float64(n) / 1e9 }

// legacySubscription answers GET /v1/dashboard/billing/subscription in the
// shape OpenAI used.
func (h *AccountAPI) legacySubscription(w http.ResponseWriter, r *http.Request, g billing.Grant) {
	bal, used, ok := h.legacyTotals(w, r, g.User)
	if !ok {
		return
	}
	limit := units(bal + used)
	var until int64
	if !g.Key.ExpiresAt.IsZero() {
		until = g.Key.ExpiresAt.Unix()
	}
	sc := h.app.Stripe
	writeJSON(w, http.StatusOK, map[string]any{
		"object":                "billing_subscription",
		"has_payment_method":    sc != nil && sc.api != nil, // top-ups are possible
		"canceled":              false,
		"canceled_at":           nil,
		"delinquent":            nil,
		"access_until":          until, // the key's expiry (Unix seconds); 0: never
		"soft_limit_usd":        limit,
		"hard_limit_usd":        limit,
		"system_hard_limit_usd": limit,
		"plan":                  map[string]string{"title": "Prepaid", "id": "prepaid"},
		// Exact, for clients that know this gateway.
		"balance":  bal,
		"currency": h.app.Currency,
	})
}

// legacyUsage answers GET /v1/dashboard/billing/usage?start_date=&end_date=.
func (h *AccountAPI) legacyUsage(w http.ResponseWriter, r *http.Request, g billing.Grant) {
	q := r.URL.Query()
	for _, name := range []string{"start_date", "end_date"} {
		if s := q.Get(name); s != "" {
			if _, err := time.Parse(time.DateOnly, s); err != nil {
				errInvalidRequest(name+": want a date like 2026-11-01", name).write(w)
				return
			}
		}
	}
	_, used, ok := h.legacyTotals(w, r, g.User)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object":      "list",
		"total_usage": float64(used) / 1e7, // cents
		"currency":    h.app.Currency,
	})
}

// legacyCreditGrants answers GET /v1/dashboard/billing/credit_grants, the
// older endpoint some balance checkers read total_available from.
func (h *AccountAPI) legacyCreditGrants(w http.ResponseWriter, r *http.Request, g billing.Grant) {
	bal, used, ok := h.legacyTotals(w, r, g.User)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object":          "credit_summary",
		"total_granted":   units(bal + used),
		"total_used":      units(used),
		"total_available": units(bal),
		"currency":        h.app.Currency,
	})
}
