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

	"github.com/caddyserver/caddy/v2"

	"github.com/cnaitoken/caddy-aitoken/accounting"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI serves the aitoken admin endpoints under /aitoken/ on Caddy's
// admin listener: users (export, erasure), credits, keys, usage, payments,
// prepaid codes, the audit trail and reconciliation. It reaches the ledger
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
		"GET /aitoken/users":               listUsers,
		"GET /aitoken/users/{id}":          getUser,
		"DELETE /aitoken/users/{id}":       deleteUser,
		"GET /aitoken/users/{id}/export":   getUserExport,
		"POST /aitoken/users/{id}/credits": postCredit,
		"POST /aitoken/keys":               postKey,
		"GET /aitoken/keys":                listKeys,
		"DELETE /aitoken/keys/{id}":        deleteKey,
		"PATCH /aitoken/keys/{id}":         patchKey,
		"GET /aitoken/usage":               listUsage,
		"GET /aitoken/usage/summary":       getUsageSummary,
		"GET /aitoken/payments":            listPaymentPages,
		"GET /aitoken/audit":               listAudit,
		"POST /aitoken/reconcile":          postReconcile,
		"POST /aitoken/codes":              postCodes,
		"GET /aitoken/codes":               listCodes,
		"DELETE /aitoken/codes/{id}":       deleteCode,
	} {
		a.mux.Handle(pattern, h)
	}
	return []caddy.AdminRoute{{Pattern: "/aitoken/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// serve runs the route the request matches and returns its error, which
// Caddy's admin server logs and answers as {"error": "…"}.
func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	var err error
	a.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeErrKey{}, &err)))
	return err
}

// routeErrKey holds, in a request's context, where its route leaves its
// error for serve.
type routeErrKey struct{}

// adminFunc is one admin route: it answers with JSON or returns an error.
type adminFunc func(app *App, w http.ResponseWriter, r *http.Request) error

func (f adminFunc) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	app := activeApp.Load()
	var err error
	switch {
	case app == nil:
		err = adminErr(http.StatusServiceUnavailable, "the aitoken app is not running")
	case app.ledger == nil:
		err = adminErr(http.StatusServiceUnavailable, errNoLedger.Error())
	default:
		err = f(app, w, r)
	}
	if err == nil {
		return
	}
	if _, ok := err.(caddy.APIError); !ok {
		err = caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err, Message: "internal error: " + err.Error()}
	}
	if slot, ok := r.Context().Value(routeErrKey{}).(*error); ok {
		*slot = err
	}
}

// adminErr is an error answered with status and msg.
func adminErr(status int, msg string) error {
	return caddy.APIError{HTTPStatus: status, Err: errors.New(msg)}
}

// badField is a 400 whose message starts with the offending field's name.
func badField(field, format string, args ...any) error {
	return adminErr(http.StatusBadRequest, field+": "+fmt.Sprintf(format, args...))
}

// redisBehind answers a change the ledger took and Redis did not: done
// says what the ledger has ("credit recorded", ...).
func redisBehind(done string, re *accounting.RedisError) error {
	return adminErr(http.StatusServiceUnavailable, done+" in the ledger but redis is unavailable; run reconcile: "+re.Err.Error())
}

func notFound(what, id string) error {
	return adminErr(http.StatusNotFound, what+" "+strconv.Quote(id)+" not found")
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
	if err := readJSON(r, v); err != nil {
		return bodyError(err)
	}
	return nil
}

// errTrailingData is a request body with more after its JSON object.
var errTrailingData = errors.New("request body has data after the JSON object")

// readJSON reads a JSON object strictly into v, returning the decoder's
// error as it is (bodyError answers it).
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errTrailingData
	}
	return nil
}

// bodyError answers an error of readJSON, naming the field when it can.
func bodyError(err error) error {
	var te *json.UnmarshalTypeError
	switch {
	case errors.Is(err, errTrailingData):
		return adminErr(http.StatusBadRequest, err.Error())
	case errors.As(err, &te):
		return badField(te.Field, "wrong type: want %s", te.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return badField(f, "unknown field")
	case errors.Is(err, io.EOF):
		return adminErr(http.StatusBadRequest, "request body must be a JSON object")
	case errors.Is(err, money.ErrAmountRange), errors.Is(err, money.ErrBadAmount):
		return adminErr(http.StatusBadRequest, err.Error())
	default:
		return adminErr(http.StatusBadRequest, "request body is not valid JSON: "+err.Error())
	}
}

// onlyParams refuses query parameters other than allowed, and any given
// twice, naming the parameter: a misspelt filter must not silently widen
// an answer.
func onlyParams(r *http.Request, allowed ...string) error {
	for name, vals := range r.URL.Query() {
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			return badField(name, "unknown query parameter")
		}
		if len(vals) > 1 {
			return badField(name, "given more than once")
		}
	}
	return nil
}

// parseLimit reads the limit parameter: 1 to 1000, default def.
func parseLimit(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > usagelog.MaxUsageLimit {
		return 0, badField("limit", "want an integer from 1 to %d", usagelog.MaxUsageLimit)
	}
	return n, nil
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

// Interface guards
var _ caddy.AdminRouter = (*AdminAPI)(nil)
