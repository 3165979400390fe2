package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
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
// API key (Authorization: Bearer or x-api-key), which must be used from
// one of the key's allowed_ips:
//
//	GET  /v1/account                  balance, held, currency
//	POST /v1/account/topup            a Stripe Checkout Session
//	GET  /v1/account/usage            the caller's usage records, newest first
//	GET  /v1/account/export           everything held about the caller, as one JSON document
//	GET  /v1/dashboard/billing/subscription   OpenAI's legacy billing pair, which
//	GET  /v1/dashboard/billing/usage          chat clients read for a balance
//	GET  /v1/dashboard/billing/credit_grants  (also without the /v1 prefix)
//
// Other paths under /v1/account, /v1/dashboard/billing and
// /dashboard/billing get 404; paths outside them pass on to the next
// handler.
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
	legacy, isLegacy := strings.CutPrefix(strings.TrimPrefix(p, "/v1"), "/dashboard/billing/")
	if p != "/v1/account" && !strings.HasPrefix(p, "/v1/account/") && !isLegacy {
		return next.ServeHTTP(w, r)
	}
	h.app.inflight.begin()
	defer h.app.inflight.end()
	w.Header().Set("Cache-Control", "no-store")
	if err := h.app.ready(); err != nil {
		h.log.Error("aitoken state not ready", zap.Error(err))
		errUnavailable.write(w)
		return nil
	}

	g, apiErr := h.authenticate(r)
	if apiErr != nil {
		apiErr.write(w)
		return nil
	}
	if isLegacy {
		p = "legacy:" + legacy
	}
	route, ok := accountRoutes[p]
	switch {
	case !ok:
		errNotFoundURL.write(w)
	case r.Method != route.method && (route.method != http.MethodGet || r.Method != http.MethodHead):
		errMethodNotAllowed(w, route.method).write(w)
	default:
		route.serve(h, w, r, g)
	}
	return nil
}

// accountRoutes are the account API's endpoints; legacy ones are keyed
// "legacy:" + the name after /dashboard/billing/.
var accountRoutes = map[string]struct {
	method string
	serve  func(h *AccountAPI, w http.ResponseWriter, r *http.Request, g billing.Grant)
}{
	"/v1/account":          {http.MethodGet, func(h *AccountAPI, w http.ResponseWriter, r *http.Request, g billing.Grant) { h.account(w, r, g.User) }},
	"/v1/account/topup":    {http.MethodPost, (*AccountAPI).topup},
	"/v1/account/usage":    {http.MethodGet, (*AccountAPI).usage},
	"/v1/account/export":   {http.MethodGet, (*AccountAPI).export},
	"legacy:subscription":  {http.MethodGet, (*AccountAPI).legacySubscription},
	"legacy:usage":         {http.MethodGet, (*AccountAPI).legacyUsage},
	"legacy:credit_grants": {http.MethodGet, (*AccountAPI).legacyCreditGrants},
}

// authenticate returns the grant of the request's API key.
func (h *AccountAPI) authenticate(r *http.Request) (billing.Grant, *apiError) {
	secret := keyFromRequest(r)
	if secret == "" {
		return billing.Grant{}, errMissingKey
	}
	g, err := h.app.accounts.Authorize(r.Context(),
		billing.AuthRequest{KeyHash: billing.HashKey(secret), CheckOnly: true, ClientIP: clientAddr(r)})
	switch {
	case errors.Is(err, billing.ErrInvalidKey):
		return billing.Grant{}, errInvalidKey
	case errors.Is(err, billing.ErrIPNotAllowed):
		return billing.Grant{}, errIPNotAllowed
	case err != nil:
		h.log.Error("redis unavailable; account request refused", zap.Error(err))
		return billing.Grant{}, errUnavailable
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.auth.user.id", g.KeyID)
	}
	return g, nil
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
		Amount *billing.Nanos `json:"amount"`
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
		if errors.Is(err, billing.ErrBadAmount) || errors.Is(err, billing.ErrAmountRange) ||
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
	minor, err := stripebill.NanosToMinor(amount, cur)
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

// errNoLedgerHere answers what needs the ledger on a node without one.
var errNoLedgerHere = &apiError{http.StatusServiceUnavailable, "server_error", "service_unavailable",
	"Usage history is kept on the ledger node; this gateway node has none. Please retry shortly.", ""}

// ledgerStore returns the ledger, or answers 503 on a gateway-only node.
func (h *AccountAPI) ledgerStore(w http.ResponseWriter) (*usagelog.Store, bool) {
	if h.app.ledger == nil {
		errNoLedgerHere.write(w)
		return nil, false
	}
	return h.app.ledger.store, true
}

// accountTimeParam reads a time bound: RFC 3339, a date (UTC), or Unix
// seconds.
func accountTimeParam(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := parseTimeParam(s)
	if err != nil {
		return t, errors.New(err.Error() + ", or Unix seconds")
	}
	return t, nil
}

// usage answers GET /v1/account/usage?from=&to=&model=&key=&limit=&before=:
// the caller's usage records, newest first, a page at a time (before is
// the last request_id of the previous page).
func (h *AccountAPI) usage(w http.ResponseWriter, r *http.Request, g billing.Grant) {
	store, ok := h.ledgerStore(w)
	if !ok {
		return
	}
	q := r.URL.Query()
	uq := usagelog.UsageQuery{User: g.User, Key: q.Get("key"), Model: q.Get("model"), Before: q.Get("before"),
		Limit: usagelog.DefaultUsageLimit}
	for _, b := range []struct {
		name string
		t    *time.Time
	}{{"from", &uq.From}, {"to", &uq.To}} {
		if s := q.Get(b.name); s != "" {
			t, err := accountTimeParam(s)
			if err != nil {
				errInvalidRequest(b.name+": "+err.Error(), b.name).write(w)
				return
			}
			*b.t = t
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > usagelog.MaxUsageLimit {
			errInvalidRequest("limit: want an integer from 1 to "+strconv.Itoa(usagelog.MaxUsageLimit), "limit").write(w)
			return
		}
		uq.Limit = n
	}
	recs, err := store.ListUsage(r.Context(), uq)
	if errors.Is(err, usagelog.ErrNotFound) {
		errInvalidRequest("before: no usage record has this request_id", "before").write(w)
		return
	}
	hasMore := false
	if err == nil && len(recs) == uq.Limit {
		next := uq
		next.Limit, next.Before = 1, recs[len(recs)-1].RequestID
		var more []usagelog.Record
		more, err = store.ListUsage(r.Context(), next)
		hasMore = len(more) > 0
	}
	if err != nil {
		h.log.Error("reading usage for the account API", zap.String("user", g.User), zap.Error(err))
		errUnavailable.write(w)
		return
	}
	if recs == nil {
		recs = []usagelog.Record{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "records": recs, "has_more": hasMore})
}

// export answers GET /v1/account/export: everything the ledger holds about
// the caller (profile, keys without secrets, ledger entries, payments,
// audit trail, every usage row) as one JSON document, streamed, plus the
// live balance. The export is recorded in the audit trail.
func (h *AccountAPI) export(w http.ResponseWriter, r *http.Request, g billing.Grant) {
	store, ok := h.ledgerStore(w)
	if !ok {
		return
	}
	ctx := r.Context()
	now := time.Now()
	if _, err := store.GetUser(ctx, g.User); err != nil {
		h.log.Error("export: reading the user", zap.String("user", g.User), zap.Error(err))
		errUnavailable.write(w)
		return
	}
	if _, err := store.AddAudit(ctx, now, usagelog.AuditUserExport, g.User,
		map[string]string{"via": "account_api", "key_id": g.KeyID}); err != nil {
		h.log.Error("export: recording it in the audit trail", zap.String("user", g.User), zap.Error(err))
		errUnavailable.write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", `attachment; filename="account-export-`+g.User+`.json"`)
	err := store.ExportUser(ctx, g.User, now, &lazyHeaderWriter{w: w})
	switch {
	case err == nil:
	case errors.Is(err, usagelog.ErrExportIncomplete):
		// The status is sent: cut the connection so the client sees a
		// broken body, never a short document that looks whole.
		h.log.Error("export cut short", zap.String("user", g.User), zap.Error(err))
		panic(http.ErrAbortHandler)
	default:
		h.log.Error("export failed", zap.String("user", g.User), zap.Error(err))
		w.Header().Del("Content-Disposition")
		errUnavailable.write(w)
	}
}

// lazyHeaderWriter sends the 200 status with the first byte written, so an
// error before it can still be answered with an error status.
type lazyHeaderWriter struct {
	w       http.ResponseWriter
	started bool
}

func (l *lazyHeaderWriter) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		l.w.WriteHeader(http.StatusOK)
	}
	return l.w.Write(p)
}

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
func (h *AccountAPI) legacyTotals(w http.ResponseWriter, r *http.Request, user string) (balance, used billing.Nanos, ok bool) {
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
func units(n billing.Nanos) float64 { return float64(n) / 1e9 }

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
