package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/billing"
	stripebill "github.com/cnaitoken/caddy-aitoken/billing/stripe"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

func init() {
	caddy.RegisterModule(AccountAPI{})
	httpcaddyfile.RegisterHandlerDirective("aitoken_account", parseAccountAPI)
	// Ahead of respond, reverse_proxy and the aitoken meter (which sits just
	// before reverse_proxy and strips the client's key), so the account API
	// sees the key and answers before the request could go upstream.
	httpcaddyfile.RegisterDirectiveOrder("aitoken_account", httpcaddyfile.Before, "respond")
}

// AccountAPI is the account API for API clients, authenticated by their
// API key (Authorization: Bearer or x-api-key): GET /v1/account (balance,
// held, currency) and POST /v1/account/topup (a Stripe Checkout Session).
// Other paths under /v1/account get 404; paths outside it pass on to the
// next handler.
type AccountAPI struct {
	app *App
	log *zap.Logger
}

// maxAccountBody bounds account API request bodies.
const maxAccountBody = 64 << 10

// Errors of the account API, in OpenAI's shape.
var (
	errTopupUnavailable = &apiError{http.StatusNotFound, "invalid_request_error", "topup_unavailable",
		"Top-ups are not enabled on this gateway.", ""}
	errPaymentProvider = &apiError{http.StatusBadGateway, "server_error", "payment_provider_error",
		"The payment provider could not start a checkout. Please retry shortly.", ""}
	errNotFoundURL = &apiError{http.StatusNotFound, "invalid_request_error", "unknown_url",
		"Unknown request URL. Please check the URL for typos.", ""}
)

func errMethodNotAllowed(w http.ResponseWriter, allow string) *apiError {
	w.Header().Set("Allow", allow)
	return &apiError{http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed",
		"This endpoint accepts " + allow + " only.", ""}
}

// CaddyModule returns the Caddy module information.
func (AccountAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.aitoken_account",
		New: func() caddy.Module { return new(AccountAPI) },
	}
}

// Provision finds the aitoken app.
func (h *AccountAPI) Provision(ctx caddy.Context) error {
	h.log = ctx.Logger()
	appIface, err := ctx.AppIfConfigured("aitoken")
	if err != nil {
		return errors.New("aitoken_account needs the aitoken global option: " + err.Error())
	}
	h.app = appIface.(*App)
	if h.app.Stripe != nil {
		return h.app.Stripe.provision(h.app.log)
	}
	return nil
}

// ServeHTTP answers the account endpoints.
func (h *AccountAPI) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	p := path.Clean("/" + r.URL.Path)
	if p != "/v1/account" && !strings.HasPrefix(p, "/v1/account/") {
		return next.ServeHTTP(w, r)
	}
	h.app.inflight.begin()
	defer h.app.inflight.end()
	w.Header().Set("Cache-Control", "no-store")

	user, apiErr := h.authenticate(r)
	if apiErr != nil {
		apiErr.write(w)
		return nil
	}
	switch p {
	case "/v1/account":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			errMethodNotAllowed(w, "GET").write(w)
			return nil
		}
		h.account(w, r, user)
	case "/v1/account/topup":
		if r.Method != http.MethodPost {
			errMethodNotAllowed(w, "POST").write(w)
			return nil
		}
		h.topup(w, r, user)
	default:
		errNotFoundURL.write(w)
	}
	return nil
}

// authenticate returns the user of the request's API key.
func (h *AccountAPI) authenticate(r *http.Request) (string, *apiError) {
	secret := keyFromRequest(r)
	if secret == "" {
		return "", errMissingKey
	}
	g, err := h.app.accounts.Authorize(r.Context(), billing.AuthRequest{KeyHash: billing.HashKey(secret), CheckOnly: true})
	switch {
	case errors.Is(err, billing.ErrInvalidKey):
		return "", errInvalidKey
	case err != nil:
		h.log.Error("redis unavailable; account request refused", zap.Error(err))
		return "", errUnavailable
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.auth.user.id", g.KeyID)
	}
	return g.User, nil
}

func (h *AccountAPI) account(w http.ResponseWriter, r *http.Request, user string) {
	bal, held, err := h.app.accounts.Balance(r.Context(), user)
	if err != nil {
		h.log.Error("redis unavailable; account request refused", zap.Error(err))
		errUnavailable.write(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "account", "user": user, "balance": bal, "held": held, "currency": h.app.Currency,
	})
}

// topupResponse is the answer to POST /v1/account/topup.
type topupResponse struct {
	// CheckoutURL is the Stripe Checkout page to send the customer to.
	CheckoutURL string `json:"checkout_url"`
	// ID is the Checkout Session.
	ID       string        `json:"id"`
	TopupID  string        `json:"topup_id"`
	Amount   billing.Nanos `json:"amount"`
	Currency string        `json:"currency"`
}

func (h *AccountAPI) topup(w http.ResponseWriter, r *http.Request, user string) {
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
		Amount *billing.Nanos `json:"amount"`
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
		if errors.Is(err, billing.ErrBadAmount) || strings.Contains(err.Error(), "amount") {
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
	amount := *in.Amount
	if amount < sc.MinTopup {
		errInvalidRequest("amount must be at least "+trimAmount(sc.MinTopup)+" "+cur, "amount").write(w)
		return
	}
	minor, err := stripebill.NanosToMinor(amount, cur)
	if err != nil {
		errInvalidRequest("amount has more decimal places than "+cur+" allows", "amount").write(w)
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
	label := stripebill.FormatMinor(minor, cur) + " " + cur
	params := &stripe.CheckoutSessionParams{
		Mode:              stripe.String(string(stripe.CheckoutSessionModePayment)),
		SuccessURL:        stripe.String(sc.SuccessURL),
		ClientReferenceID: stripe.String(user),
		LineItems: []*stripe.CheckoutSessionLineItemParams{{
			PriceData: &stripe.CheckoutSessionLineItemPriceDataParams{
				Currency:   stripe.String(strings.ToLower(cur)),
				UnitAmount: stripe.Int64(minor),
				ProductData: &stripe.CheckoutSessionLineItemPriceDataProductDataParams{
					Name: stripe.String("API credit " + label),
				},
			},
			Quantity: stripe.Int64(1),
		}},
		PaymentIntentData: &stripe.CheckoutSessionPaymentIntentDataParams{
			Metadata: map[string]string{"user": user, "topup_id": t.TopupID},
		},
	}
	if sc.CancelURL != "" {
		params.CancelURL = stripe.String(sc.CancelURL)
	}
	params.AddMetadata("user", user)
	params.AddMetadata("topup_id", t.TopupID)
	params.SetIdempotencyKey("topup-" + t.TopupID)
	params.Context = ctx
	s, err := sc.api.CheckoutSessions.New(params)
	if err != nil {
		if ferr := store.TopupFailed(ctx, t.TopupID); ferr != nil {
			h.log.Error("recording a failed top-up", zap.String("topup_id", t.TopupID), zap.Error(ferr))
		}
		var se *stripe.Error
		if errors.As(err, &se) && se.HTTPStatusCode == http.StatusBadRequest && strings.Contains(se.Param, "amount") {
			errInvalidRequest("the payment provider refused this amount: "+se.Msg, "amount").write(w)
			return
		}
		h.log.Error("creating a Stripe Checkout Session failed",
			zap.String("user", user), zap.String("topup_id", t.TopupID), zap.Error(err))
		errPaymentProvider.write(w)
		return
	}
	pi := ""
	if s.PaymentIntent != nil {
		pi = s.PaymentIntent.ID
	}
	if err := store.TopupOpened(ctx, t.TopupID, s.ID, pi); err != nil {
		// The webhook finds the top-up by its metadata, or makes one.
		h.log.Error("recording a top-up's Checkout Session failed",
			zap.String("topup_id", t.TopupID), zap.String("session", s.ID), zap.Error(err))
	}
	h.log.Info("top-up started", zap.String("user", user), zap.String("topup_id", t.TopupID),
		zap.String("session", s.ID), zap.String("amount", label))
	writeJSON(w, http.StatusOK, topupResponse{CheckoutURL: s.URL, ID: s.ID, TopupID: t.TopupID, Amount: amount, Currency: cur})
}

// trimAmount writes n without trailing zeros past two places ("5.00").
func trimAmount(n billing.Nanos) string {
	s := strings.TrimRight(n.String(), "0")
	whole, frac, _ := strings.Cut(s, ".")
	for len(frac) < 2 {
		frac += "0"
	}
	return whole + "." + frac
}

func parseAccountAPI(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(AccountAPI)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile reads the aitoken_account directive, which takes no
// options:
//
//	aitoken_account
func (h *AccountAPI) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("aitoken_account takes no options")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*AccountAPI)(nil)
	_ caddyhttp.MiddlewareHandler = (*AccountAPI)(nil)
	_ caddyfile.Unmarshaler       = (*AccountAPI)(nil)
)
