package caddymodule

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/cnaitoken/caddy-aitoken/payments"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// paymentView is a payment as the admin API shows it.
type paymentView struct {
	usagelog.Payment
	// Amount is AmountMinor as a decimal in currency units ("20.00").
	Amount string `json:"amount"`
}

// listPaymentPages answers GET /aitoken/payments: payments newest first, a
// page of limit at a time; next, when set, is the before of the next page.
func listPaymentPages(app *App, w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "user", "limit", "before"); err != nil {
		return err
	}
	q := r.URL.Query()
	pq := usagelog.PaymentQuery{User: q.Get("user")}
	var err error
	if pq.Limit, err = parseLimit(q.Get("limit"), 100); err != nil {
		return err
	}
	if s := q.Get("before"); s != "" {
		if pq.Before, err = strconv.ParseInt(s, 10, 64); err != nil || pq.Before <= 0 {
			return badField("before", "want the id of a payment (the next of the previous page)")
		}
	}
	ps, err := app.ledger.store.PaymentsPage(r.Context(), pq)
	if errors.Is(err, usagelog.ErrNotFound) {
		return badField("before", "no payment %d", pq.Before)
	}
	if err != nil {
		return err
	}
	out := make([]paymentView, len(ps))
	for i, p := range ps {
		out[i] = paymentView{Payment: p, Amount: payments.FormatMinor(p.AmountMinor, p.Currency)}
	}
	resp := map[string]any{"payments": out}
	if len(ps) == pq.Limit {
		resp["next"] = strconv.FormatInt(ps[len(ps)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}
