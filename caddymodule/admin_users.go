package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/accounting"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// The admin API's users: create, show, credit, export and erase. The
// workflows that touch the ledger and Redis are package accounting's; the
// erasure and export rules are mapped to the privacy policy in
// docs/privacy.md.

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
		return userView{}, adminErr(http.StatusServiceUnavailable, "redis unavailable: "+err.Error())
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
	u, err := app.books().CreateUser(r.Context(), usagelog.User{ID: in.ID, Email: in.Email, Name: in.Name})
	var re *accounting.RedisError
	switch {
	case errors.Is(err, usagelog.ErrExists):
		return adminErr(http.StatusConflict, "id: user "+strconv.Quote(in.ID)+" already exists")
	case errors.As(err, &re):
		return redisBehind("user stored", re)
	case err != nil:
		return err
	}
	return app.writeUser(w, r, http.StatusCreated, u)
}

// writeUser answers with u, its balance and held amount included.
func (app *App) writeUser(w http.ResponseWriter, r *http.Request, status int, u usagelog.User) error {
	v, err := app.userView(r, u)
	if err != nil {
		return err
	}
	writeJSON(w, status, v)
	return nil
}

// listUsers answers GET /aitoken/users?email=&status=&limit=&cursor=: a
// page of users in ID order (without balances: GET one for those), and
// the cursor of the next page when there may be one.
func listUsers(app *App, w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "email", "status", "limit", "cursor"); err != nil {
		return err
	}
	qv := r.URL.Query()
	q := usagelog.UserQuery{Email: qv.Get("email"), Status: qv.Get("status"), After: qv.Get("cursor")}
	if q.Status != "" && q.Status != usagelog.UserActive && q.Status != usagelog.UserDeleted {
		return badField("status", "want active or deleted")
	}
	var err error
	if q.Limit, err = parseLimit(qv.Get("limit"), 100); err != nil {
		return err
	}
	users, err := app.ledger.store.ListUsers(r.Context(), q)
	if err != nil {
		return err
	}
	resp := map[string]any{"users": users}
	if len(users) == q.Limit {
		resp["next"] = users[len(users)-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
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
	return app.writeUser(w, r, http.StatusOK, u)
}

// postCredit credits (or, with a negative amount, debits) a user: the
// entry is recorded in the ledger, then applied to the live balance with an
// idempotency mark, like a Stripe payment (accounting.Books.Credit), and
// the user is answered with the new balance.
func postCredit(app *App, w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Amount *money.Nanos `json:"amount"`
		Reason string       `json:"reason"`
	}
	if err := readJSON(r, &in); err != nil {
		return bodyError(err)
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
	erased := adminErr(http.StatusConflict, "user "+strconv.Quote(id)+" was deleted (erased): its account is closed and takes no credit or debit")
	if u.Status == usagelog.UserDeleted {
		return erased
	}
	_, err = app.books().Credit(r.Context(), id, *in.Amount, in.Reason)
	var re *accounting.RedisError
	switch {
	case errors.Is(err, money.ErrAmountRange): // in the ledger, or (accounting.ErrLiveRange) in Redis
		return adminErr(http.StatusBadRequest, err.Error())
	case errors.Is(err, usagelog.ErrUserDeleted):
		return erased
	case errors.Is(err, usagelog.ErrNotFound):
		return notFound("user", id)
	case errors.As(err, &re):
		return redisBehind("credit recorded", re)
	case err != nil:
		return err
	}
	return app.writeUser(w, r, http.StatusOK, u)
}

// erasureView is the answer to DELETE /aitoken/users/{id}.
type erasureView struct {
	usagelog.Erasure
	Status string `json:"status"`
	// KeysRevokedInRedis is how many key records were revoked (and the
	// revocation published to every node).
	KeysRevokedInRedis int `json:"keys_revoked_in_redis"`
}

// deleteUser erases a user's personal data and revokes every key of the
// user on every node (accounting.Books.EraseUser). Repeating it is safe and
// finishes an erasure that Redis could not complete.
func deleteUser(app *App, w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	id := r.PathValue("id")
	e, revoked, err := app.books().EraseUser(r.Context(), id)
	var re *accounting.RedisError
	switch {
	case errors.Is(err, usagelog.ErrNotFound):
		return notFound("user", id)
	case errors.As(err, &re):
		return adminErr(http.StatusServiceUnavailable,
			"personal data erased and keys revoked in the ledger, but redis is unavailable so keys may still work: "+
				"repeat the DELETE or run reconcile with apply: "+re.Err.Error())
	case err != nil:
		return err
	}
	writeJSON(w, http.StatusOK, erasureView{Erasure: e, Status: usagelog.UserDeleted, KeysRevokedInRedis: revoked})
	return nil
}

func getUserExport(app *App, w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	id := r.PathValue("id")
	err := app.writeExport(w, r, id, "admin")
	if errors.Is(err, usagelog.ErrNotFound) {
		return notFound("user", id)
	}
	return err
}

// writeExport answers with everything the ledger holds about user, as one
// JSON document (see usagelog.Store.ExportUser), after recording the export
// in the audit trail; via says who asked ("admin" or "account"). An unknown
// user gives an error wrapping usagelog.ErrNotFound before anything is
// written. When reading fails half-way, the response is aborted (the
// connection is cut) so that a truncated document is never taken for a
// whole one.
func (app *App) writeExport(w http.ResponseWriter, r *http.Request, user, via string) error {
	ctx := r.Context()
	if _, err := app.ledger.store.GetUser(ctx, user); err != nil {
		return err
	}
	app.flushUsage(ctx)
	now := time.Now().UTC()
	if _, err := app.ledger.store.AddAudit(ctx, now, usagelog.AuditUserExport, user, map[string]string{"via": via}); err != nil {
		return err
	}
	aw := &abortWriter{w: w, header: func(h http.Header) {
		h.Set("Content-Type", "application/json")
		h.Set("Content-Disposition", `attachment; filename="aitoken-export-`+user+`.json"`)
		h.Set("Cache-Control", "no-store")
	}}
	err := app.ledger.store.ExportUser(ctx, user, now, aw)
	if err != nil && aw.started {
		app.log.Error("export failed after it began; aborting the response", zap.String("user", user), zap.Error(err))
		panic(http.ErrAbortHandler)
	}
	return err
}

// flushUsage moves records still in the usage stream into the ledger, so
// an export sees them. Redis being down only delays those records, so it
// is logged, not fatal.
func (app *App) flushUsage(ctx context.Context) {
	if _, err := app.ledger.flusher.FlushNow(ctx); err != nil {
		app.log.Warn("flushing the usage stream before a privacy operation", zap.Error(err))
	}
}

// abortWriter sets the answer's headers at the first byte written, so a
// failure before it can still be answered with a JSON error.
type abortWriter struct {
	w       http.ResponseWriter
	header  func(http.Header)
	started bool
}

func (a *abortWriter) Write(p []byte) (int, error) {
	if !a.started {
		a.started = true
		a.header(a.w.Header())
		a.w.WriteHeader(http.StatusOK)
	}
	return a.w.Write(p)
}
