package dashboard

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	checkoutsession "github.com/stripe/stripe-go/v76/checkout/session"
	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/accounting"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/payments"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// Topups is how the billing page starts top-ups: the Stripe client and the
// policy the account API's top-ups follow too.
type Topups struct {
	// API is the Stripe client.
	API *checkoutsession.Client
	// Policy bounds the amounts and their rate.
	Policy accounting.TopupPolicy
}

// topupDoor names the dashboard's top-up counter, beside each API key's.
const topupDoor = "dashboard"

// presets are the top-up amounts offered as one-click buttons, when within
// the policy's bounds.
var presets = []money.Nanos{10 * money.NanosPerUnit, 20 * money.NanosPerUnit, 50 * money.NanosPerUnit}

// paymentsPerPage is the billing page's page of payments.
const paymentsPerPage = 50

type billingData struct {
	Currency      string
	Balance, Held money.Nanos
	Enabled       bool
	Min, Max      money.Nanos
	Presets       []money.Nanos
	Amount        string
	Payments      []paymentRow
	Next          string
}

type paymentRow struct {
	ID                     int64
	Kind, Status, Amount   string
	Credited               money.Nanos
	Created                time.Time
	Refund, Dispute, Topup bool
}

func (d *Dashboard) billingPage(w http.ResponseWriter, rq *request) {
	d.renderBilling(w, rq, http.StatusOK, "", "")
}

// renderBilling shows the billing page, with the amount typed in and an
// error message key.
func (d *Dashboard) renderBilling(w http.ResponseWriter, rq *request, status int, amount, msg string, args ...string) {
	d.renderBillingFlash(w, rq, status, amount, "", msg, args...)
}

// renderBillingFlash is renderBilling with a message of success (already
// translated).
func (d *Dashboard) renderBillingFlash(w http.ResponseWriter, rq *request, status int, amount, flash, msg string, args ...string) {
	ctx, user := rq.Context(), rq.s.User
	v := billingData{Currency: d.cfg.Currency, Amount: amount, Enabled: d.cfg.Topups != nil}
	if v.Enabled {
		p := d.cfg.Topups.Policy
		v.Min, v.Max = p.Min, p.Max
		for _, a := range presets {
			if a >= p.Min && a <= p.Max {
				v.Presets = append(v.Presets, a)
			}
		}
	}
	var err error
	if v.Balance, v.Held, err = rq.b.Accounts.Balance(ctx, user); err != nil {
		d.fail(w, rq, "reading the balance", err)
		return
	}
	q := usagelog.PaymentQuery{User: user, Limit: paymentsPerPage}
	if s := rq.URL.Query().Get("before"); s != "" {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id <= 0 {
			d.notFound(w, rq)
			return
		}
		p, err := rq.b.Store.GetPayment(ctx, id)
		if errors.Is(err, usagelog.ErrNotFound) || err == nil && p.User != user {
			d.notFound(w, rq)
			return
		}
		if err != nil {
			d.fail(w, rq, "reading a payment", err)
			return
		}
		q.Before = id
	}
	ps, err := rq.b.Store.PaymentsPage(ctx, q)
	if err != nil {
		d.fail(w, rq, "listing payments", err)
		return
	}
	for _, p := range ps {
		st := rq.t("payment.status." + p.Status)
		if st == "payment.status."+p.Status {
			st = p.Status
		}
		v.Payments = append(v.Payments, paymentRow{ID: p.ID, Kind: rq.t("payment.kind." + p.Kind), Status: st,
			Amount: payments.FormatMinor(p.AmountMinor, p.Currency) + " " + p.Currency, Credited: p.Credited,
			Created: p.CreatedAt, Refund: p.Kind == usagelog.PaymentRefund, Dispute: p.Kind == usagelog.PaymentDispute,
			Topup: p.Kind == usagelog.PaymentTopup})
	}
	if len(ps) == paymentsPerPage {
		v.Next = strconv.FormatInt(ps[len(ps)-1].ID, 10)
	}
	errText := ""
	if msg != "" {
		errText = rq.t(msg)
		for i := 0; i+1 < len(args); i += 2 {
			errText = strings.ReplaceAll(errText, args[i], args[i+1])
		}
	}
	d.render(w, rq, status, "billing", view{Data: v, Error: errText, Flash: flash})
}

// topup starts a top-up and sends the browser to Stripe Checkout.
func (d *Dashboard) topup(w http.ResponseWriter, rq *request) {
	typed := rq.PostFormValue("amount")
	tp := d.cfg.Topups
	if tp == nil {
		d.renderBilling(w, rq, http.StatusNotFound, typed, "billing.unavailable")
		return
	}
	amount, err := money.ParseNanos(strings.TrimSpace(typed))
	if err != nil {
		d.renderBilling(w, rq, http.StatusBadRequest, typed, "billing.bad_amount")
		return
	}
	cur, user := d.cfg.Currency, rq.s.User
	minor, err := accounting.CheckTopup(amount, cur, tp.Policy)
	var be *accounting.TopupBoundError
	switch {
	case errors.As(err, &be) && be.Below:
		d.renderBilling(w, rq, http.StatusBadRequest, typed, "billing.too_small", "{amount}", accounting.FormatAmount(be.Bound)+" "+cur)
		return
	case errors.As(err, &be):
		d.renderBilling(w, rq, http.StatusBadRequest, typed, "billing.too_large", "{amount}", accounting.FormatAmount(be.Bound)+" "+cur)
		return
	case err != nil:
		d.renderBilling(w, rq, http.StatusBadRequest, typed, "billing.bad_amount")
		return
	}
	ok, reset, err := accounting.AllowTopup(rq.Context(), rq.b.Redis, accounting.TopupCounterKey(user, topupDoor), tp.Policy)
	if err != nil {
		d.fail(w, rq, "counting top-ups", err)
		return
	}
	if !ok {
		w.Header().Set("Retry-After", strconv.FormatInt(max(int64((reset+time.Second-1)/time.Second), 1), 10))
		d.renderBilling(w, rq, http.StatusTooManyRequests, typed, "billing.rate_limited")
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(rq.Context()), 35*time.Second)
	defer cancel()
	t, err := rq.b.Books.StartTopup(ctx, tp.API, user, minor, cur, tp.Policy)
	var ae *payments.AmountError
	switch {
	case errors.As(err, &ae):
		d.renderBilling(w, rq, http.StatusBadRequest, typed, "billing.refused_amount")
		return
	case err != nil && t.ID == "":
		d.fail(w, rq, "recording a top-up", err)
		return
	case err != nil:
		d.log.Error("dashboard: creating a Stripe Checkout Session failed", zap.String("user", user),
			zap.String("topup_id", t.ID), zap.Error(err))
		d.renderBilling(w, rq, http.StatusBadGateway, typed, "billing.provider")
		return
	}
	http.Redirect(w, rq.Request, t.Session.URL, http.StatusSeeOther)
}
