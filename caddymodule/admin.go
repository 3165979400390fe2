package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI serves the aitoken admin endpoints under /aitoken/ on Caddy's
// admin listener: users (export, erasure), credits, keys, usage, payments,
// the audit trail and reconciliation. It reaches the ledger
// through the running aitoken app; it holds no state of its own.
type AdminAPI struct {
	mux *http.ServeMux
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.aitoken",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	a.mux = http.NewServeMux()
	for pattern, h := range map[string]adminFunc{
		"POST /aitoken/users":              postUser,
		"GET /aitoken/users/{id}":          getUser,
		"DELETE /aitoken/users/{id}":       deleteUser,
		"GET /aitoken/users/{id}/export":   getUserExport,
		"POST /aitoken/users/{id}/credits": postCredit,
		"POST /aitoken/keys":               postKey,
		"GET /aitoken/keys":                listKeys,
		"DELETE /aitoken/keys/{id}":        deleteKey,
		"GET /aitoken/usage":               listUsage,
		"GET /aitoken/usage/summary":       getUsageSummary,
		"GET /aitoken/payments":            listPaymentPages,
		"GET /aitoken/audit":               listAudit,
		"POST /aitoken/reconcile":          postReconcile,
	} {
		a.mux.Handle(pattern, h)
	}
	return []caddy.AdminRoute{{Pattern: "/aitoken/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	a.mux.ServeHTTP(w, r)
	return nil
}

// adminFunc is one admin route: it answers with JSON or returns an error.
type adminFunc func(app *App, w http.ResponseWriter, r *http.Request) error

func (f adminFunc) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	app := activeApp.Load()
	var err error
	switch {
	case app == nil:
		err = &adminError{http.StatusServiceUnavailable, "", "the aitoken app is not running"}
	case app.ledger == nil:
		err = &adminError{http.StatusServiceUnavailable, "", errNoLedger.Error()}
	default:
		err = f(app, w, r)
	}
	if err == nil {
		return
	}
	var ae *adminError
	if !errors.As(err, &ae) {
		app.log.Error("admin request failed", zapErr(err))
		ae = &adminError{http.StatusInternalServerError, "", "internal error: " + err.Error()}
	}
	writeJSON(w, ae.status, ae)
}

// adminError is a JSON error naming the offending field.
type adminError struct {
	status  int
	Field   string `json:"field,omitempty"`
	Message string `json:"error"`
}

func (e *adminError) Error() string { return e.Message }

func badField(field, format string, args ...any) *adminError {
	return &adminError{http.StatusBadRequest, field, field + ": " + fmt.Sprintf(format, args...)}
}

func notFound(what, id string) *adminError {
	return &adminError{http.StatusNotFound, "", what + " " + strconv.Quote(id) + " not found"}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// maxAdminBody bounds admin request bodies.
const maxAdminBody = 1 << 20

// decodeBody reads a JSON object strictly: unknown fields and trailing data
// are errors that name what is wrong.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			return badField(te.Field, "wrong type: want %s", te.Type)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return badField(f, "unknown field")
		case errors.Is(err, io.EOF):
			return &adminError{http.StatusBadRequest, "", "request body must be a JSON object"}
		case errors.Is(err, money.ErrAmountRange):
			return &adminError{http.StatusBadRequest, "", err.Error()}
		default:
			return &adminError{http.StatusBadRequest, "", "request body is not valid JSON: " + err.Error()}
		}
	}
	if dec.More() {
		return &adminError{http.StatusBadRequest, "", "request body has data after the JSON object"}
	}
	return nil
}

// userView is a user with its live balance.
type userView struct {
	usagelog.User
	Balance  money.Nanos `json:"balance"`
	Held     money.Nanos `json:"held"`
	Currency string      `json:"currency"`
}

func (app *App) userView(r *http.Request, u usagelog.User) (userView, error) {
	bal, held, err := app.accounts.Balance(r.Context(), u.ID)
	if err != nil {
		return userView{}, &adminError{http.StatusServiceUnavailable, "", "redis unavailable: " + err.Error()}
	}
	return userView{User: u, Balance: bal, Held: held, Currency: app.Currency}, nil
}

func postUser(app *App, w http.ResponseWriter, r *http.Request) error {
	var in struct {
		ID    string `json:"id"`
		Email string `json:"email"`
		Name  string `json:"name"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	if in.ID != "" && !validID(in.ID) {
		return badField("id", "use 1 to 64 letters, digits, '-', '_' or '.'")
	}
	if in.Email != "" && (len(in.Email) > 254 || !strings.Contains(in.Email, "@") || strings.ContainsAny(in.Email, " \t\r\n")) {
		return badField("email", "not an email address")
	}
	if len(in.Name) > 200 {
		return badField("name", "longer than 200 characters")
	}
	u, err := app.ledger.store.CreateUser(r.Context(), usagelog.User{ID: in.ID, Email: in.Email, Name: in.Name})
	if errors.Is(err, usagelog.ErrExists) {
		return &adminError{http.StatusConflict, "id", "id: user " + strconv.Quote(in.ID) + " already exists"}
	}
	if err != nil {
		return err
	}
	if err := app.accounts.EnsureAccount(r.Context(), u.ID); err != nil {
		return &adminError{http.StatusServiceUnavailable, "", "user stored in the ledger but redis is unavailable; run reconcile: " + err.Error()}
	}
	v, err := app.userView(r, u)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func getUser(app *App, w http.ResponseWriter, r *http.Request) error {
	u, err := app.ledger.store.GetUser(r.Context(), r.PathValue("id"))
	if errors.Is(err, usagelog.ErrNotFound) {
		return notFound("user", r.PathValue("id"))
	}
	if err != nil {
		return err
	}
	v, err := app.userView(r, u)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func postCredit(app *App, w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Amount *money.Nanos `json:"amount"`
		Reason string       `json:"reason"`
	}
	if err := decodeBody(r, &in); err != nil {
		if ae, ok := err.(*adminError); ok && ae.Field == "" && strings.Contains(ae.Message, "amount") {
			ae.Field = "amount"
		}
		return err
	}
	if in.Amount == nil || *in.Amount == 0 {
		return badField("amount", "required: a non-zero decimal string like \"10.00\" (negative debits)")
	}
	if len(in.Reason) > 500 {
		return badField("reason", "longer than 500 characters")
	}
	id := r.PathValue("id")
	u, err := app.ledger.store.GetUser(r.Context(), id)
	if errors.Is(err, usagelog.ErrNotFound) {
		return notFound("user", id)
	}
	if err != nil {
		return err
	}
	// An erased user still answers GET (as deleted), so 409 rather than
	// 404: the user exists, its state forbids the change.
	erased := &adminError{http.StatusConflict, "", "user " + strconv.Quote(id) + " was deleted (erased): its account is closed and takes no credit or debit"}
	if u.Status == usagelog.UserDeleted {
		return erased
	}
	kind := "credit"
	if *in.Amount < 0 {
		kind = "debit"
	}
	// Every bound is checked before anything is written: the amount, and
	// the ledger balance it makes, in the ledger's transaction; the live
	// balance in the Redis script. A refusal there takes the entry back.
	entry, err := app.ledger.store.AddLedgerEntry(r.Context(), id, *in.Amount, kind, in.Reason, "")
	switch {
	case errors.Is(err, money.ErrAmountRange):
		return &adminError{http.StatusBadRequest, "amount", err.Error()}
	case errors.Is(err, usagelog.ErrUserDeleted):
		return erased
	case err != nil:
		return err
	}
	if _, err := app.accounts.Credit(r.Context(), id, *in.Amount); errors.Is(err, money.ErrAmountRange) {
		if uerr := app.ledger.store.UndoLedgerEntry(context.WithoutCancel(r.Context()), id, entry); uerr != nil {
			return fmt.Errorf("redis refused the credit (%v) and taking back ledger entry %d failed: %w", err, entry, uerr)
		}
		return &adminError{http.StatusBadRequest, "amount", err.Error() + " (the live balance in redis would leave the range; run reconcile)"}
	} else if err != nil {
		return &adminError{http.StatusServiceUnavailable, "", "credit recorded in the ledger but redis is unavailable; run reconcile: " + err.Error()}
	}
	v, err := app.userView(r, u)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// keyView is a key as the admin API shows it; Key is set only at creation.
type keyView struct {
	usagelog.Key
	Secret string `json:"key,omitempty"`
}

func postKey(app *App, w http.ResponseWriter, r *http.Request) error {
	var in struct {
		User       string     `json:"user"`
		Name       string     `json:"name"`
		Models     []string   `json:"models"`
		RPM        int64      `json:"rpm"`
		TPM        int64      `json:"tpm"`
		AllowedIPs []string   `json:"allowed_ips"`
		ExpiresAt  *time.Time `json:"expires_at"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	if in.User == "" {
		return badField("user", "required")
	}
	if len(in.Name) > 200 {
		return badField("name", "longer than 200 characters")
	}
	for _, m := range in.Models {
		if _, ok := app.prices.Lookup(m); !ok {
			return badField("models", "%q has no price", m)
		}
	}
	if in.RPM < 0 {
		return badField("rpm", "must be 0 (unlimited) or a positive number of requests per minute")
	}
	if in.TPM < 0 {
		return badField("tpm", "must be 0 (unlimited) or a positive number of tokens per minute")
	}
	if in.ExpiresAt != nil && !in.ExpiresAt.After(time.Now()) {
		return badField("expires_at", "must be in the future")
	}
	allowedIPs, err := billing.NormalizeAllowedIPs(in.AllowedIPs)
	if err != nil {
		return badField("allowed_ips", "%v", err)
	}
	u, err := app.ledger.store.GetUser(r.Context(), in.User)
	if errors.Is(err, usagelog.ErrNotFound) {
		return &adminError{http.StatusBadRequest, "user", "user: " + strconv.Quote(in.User) + " not found"}
	}
	if err != nil {
		return err
	}
	if u.Status != "active" {
		return badField("user", "user %q is %s", in.User, u.Status)
	}
	secret := billing.NewKeySecret()
	k := usagelog.Key{
		ID:         billing.NewID("key_"),
		UserID:     u.ID,
		Name:       in.Name,
		Hash:       billing.HashKey(secret),
		Prefix:     secret[:11],
		Models:     in.Models,
		RPM:        in.RPM,
		TPM:        in.TPM,
		AllowedIPs: allowedIPs,
		ExpiresAt:  in.ExpiresAt,
		Status:     "active",
		CreatedAt:  time.Now().UTC(),
	}
	if err := app.ledger.store.CreateKey(r.Context(), k); err != nil {
		return err
	}
	rec := billing.KeyRecord{ID: k.ID, User: k.UserID, Active: true, Models: k.Models, RPM: k.RPM, TPM: k.TPM,
		AllowedIPs: k.AllowedIPs}
	if k.ExpiresAt != nil {
		rec.ExpiresAt = *k.ExpiresAt
	}
	err = app.accounts.EnsureAccount(r.Context(), u.ID)
	if err == nil {
		err = app.accounts.PutKey(r.Context(), k.Hash, rec)
	}
	if err != nil {
		// Never hand out a key that cannot work: retire it in the ledger.
		_, _ = app.ledger.store.RevokeKey(r.Context(), k.ID, time.Now())
		return &adminError{http.StatusServiceUnavailable, "", "redis unavailable; no key was issued: " + err.Error()}
	}
	writeJSON(w, http.StatusCreated, keyView{Key: k, Secret: secret})
	return nil
}

func listKeys(app *App, w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "user"); err != nil {
		return err
	}
	user := r.URL.Query().Get("user")
	if user == "" {
		return badField("user", "required query parameter")
	}
	keys, err := app.ledger.store.ListKeys(r.Context(), user)
	if err != nil {
		return err
	}
	if keys == nil {
		keys = []usagelog.Key{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
	return nil
}

func deleteKey(app *App, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	k, err := app.ledger.store.RevokeKey(r.Context(), id, time.Now().UTC())
	if errors.Is(err, usagelog.ErrNotFound) {
		return notFound("key", id)
	}
	if err != nil {
		return err
	}
	if err := app.accounts.RevokeKey(r.Context(), k.Hash); err != nil {
		return &adminError{http.StatusServiceUnavailable, "", "key revoked in the ledger but redis is unavailable; run reconcile: " + err.Error()}
	}
	writeJSON(w, http.StatusOK, k)
	return nil
}

// listUsage answers GET /aitoken/usage: records newest first, a page of
// limit (default 100) at a time; next, when set, is the before of the next
// page (a request_id).
func listUsage(app *App, w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "user", "key", "model", "from", "to", "limit", "before"); err != nil {
		return err
	}
	q := r.URL.Query()
	uq := usagelog.UsageQuery{User: q.Get("user"), Key: q.Get("key"), Model: q.Get("model"), Before: q.Get("before")}
	var err error
	if uq.From, err = parseTimeParam(q.Get("from")); err != nil {
		return badField("from", "%v", err)
	}
	if uq.To, err = parseTimeParam(q.Get("to")); err != nil {
		return badField("to", "%v", err)
	}
	if !uq.From.IsZero() && !uq.To.IsZero() && !uq.To.After(uq.From) {
		return badField("to", "must be after from")
	}
	if uq.Limit, err = parseLimit(q.Get("limit"), usagelog.DefaultUsageLimit); err != nil {
		return err
	}
	recs, err := app.ledger.store.ListUsage(r.Context(), uq)
	if errors.Is(err, usagelog.ErrNotFound) {
		return badField("before", "no usage record %q", uq.Before)
	}
	if err != nil {
		return err
	}
	if recs == nil {
		recs = []usagelog.Record{}
	}
	resp := map[string]any{"records": recs}
	if len(recs) == uq.Limit {
		resp["next"] = recs[len(recs)-1].RequestID
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// parseTimeParam reads RFC 3339 or a date (YYYY-MM-DD, UTC); empty is zero.
func parseTimeParam(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("want RFC 3339 (2026-01-02T15:04:05Z) or a date (2026-01-02)")
}

// validID accepts user-chosen IDs that are safe in Redis key names.
func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return false
		}
	}
	return true
}

func zapErr(err error) zap.Field { return zap.Error(err) }

// Interface guards
var _ caddy.AdminRouter = (*AdminAPI)(nil)
