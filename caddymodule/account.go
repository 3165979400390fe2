package caddymodule

import (
	"errors"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

func init() {
	caddy.RegisterModule(AccountAPI{})
}

// AccountAPI is the account API for API clients, authenticated by their
// API key (Authorization: Bearer or x-api-key), which must be used from
// one of the key's allowed_ips:
//
//	GET  /v1/account                  balance, held, currency
//	POST /v1/account/topup            a Stripe Checkout Session
//	POST /v1/account/redeem           redeem a prepaid code
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
	"/v1/account/redeem":   {http.MethodPost, (*AccountAPI).redeem},
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

// ledgerStore returns the ledger, or answers 503 on a gateway-only node.
func (h *AccountAPI) ledgerStore(w http.ResponseWriter) (*usagelog.Store, bool) {
	if h.app.ledger == nil {
		errNoLedgerAPI.write(w)
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

// Interface guards
var (
	_ caddy.Provisioner           = (*AccountAPI)(nil)
	_ caddyhttp.MiddlewareHandler = (*AccountAPI)(nil)
)
