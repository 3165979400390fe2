package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/payments"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// This file is the admin half of the privacy rights: export (portability and access),
// erasure, the usage summary, and the audit trail. The retention job is in
// retention.go; the rules are mapped to the privacy policy in
// docs/privacy.md.

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

// flushUsage moves records still in the usage stream into the ledger, so
// an export or erasure sees them. Redis being down only delays those
// records, so it is logged, not fatal.
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

// erasureView is the answer to DELETE /aitoken/users/{id}.
type erasureView struct {
	usagelog.Erasure
	Status string `json:"status"`
	// KeysRevokedInRedis is how many key records were revoked (and the
	// revocation published to every node).
	KeysRevokedInRedis int `json:"keys_revoked_in_redis"`
}

// deleteUser erases a user's personal data (usagelog.Store.EraseUser: one
// transaction), then revokes every key of the user in Redis, which tells
// every gateway node at once. Repeating it is safe and finishes an erasure
// that Redis could not complete.
func deleteUser(app *App, w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	ctx := r.Context()
	id := r.PathValue("id")
	if _, err := app.ledger.store.GetUser(ctx, id); errors.Is(err, usagelog.ErrNotFound) {
		return notFound("user", id)
	} else if err != nil {
		return err
	}
	app.flushUsage(ctx)
	e, err := app.ledger.store.EraseUser(ctx, id, time.Now().UTC())
	if errors.Is(err, usagelog.ErrNotFound) {
		return notFound("user", id)
	}
	if err != nil {
		return err
	}
	v := erasureView{Erasure: e, Status: usagelog.UserDeleted}
	for _, k := range e.Keys {
		// The record is rewritten revoked and without its allowed IPs
		// (personal data), then the revocation is published.
		err := app.accounts.PutKey(ctx, k.Hash, billing.KeyRecord{ID: k.ID, User: k.UserID, Active: false})
		if err == nil {
			err = app.accounts.RevokeKey(ctx, k.Hash)
		}
		if err != nil {
			return &adminError{http.StatusServiceUnavailable, "",
				"personal data erased and keys revoked in the ledger, but redis is unavailable so keys may still work: " +
					"repeat the DELETE or run reconcile with apply: " + err.Error()}
		}
		v.KeysRevokedInRedis++
	}
	// Requests admitted before the revocation may still settle: take what
	// reached the stream now; the retention job's hourly scrub takes the rest.
	app.flushUsage(ctx)
	if _, err := app.ledger.store.ScrubErased(ctx, e.ErasedAt); err != nil {
		app.log.Warn("clearing late client IPs after an erasure", zap.String("user", id), zap.Error(err))
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// summaryView is the answer to GET /aitoken/usage/summary.
type summaryView struct {
	User     string                 `json:"user,omitempty"`
	From     *time.Time             `json:"from,omitempty"`
	To       *time.Time             `json:"to,omitempty"`
	GroupBy  string                 `json:"group_by,omitempty"`
	Currency string                 `json:"currency"`
	Groups   []usagelog.UsageTotals `json:"groups"`
	Total    usagelog.UsageTotals   `json:"total"`
}

func getUsageSummary(app *App, w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "user", "from", "to", "group_by"); err != nil {
		return err
	}
	q := r.URL.Query()
	sq := usagelog.SummaryQuery{User: q.Get("user"), GroupBy: q.Get("group_by")}
	if q.Has("user") && sq.User == "" {
		return badField("user", "empty")
	}
	switch sq.GroupBy {
	case "", usagelog.GroupByModel, usagelog.GroupByDay:
	default:
		return badField("group_by", "want model or day")
	}
	var err error
	if sq.From, err = parseTimeParam(q.Get("from")); err != nil {
		return badField("from", "%v", err)
	}
	if sq.To, err = parseTimeParam(q.Get("to")); err != nil {
		return badField("to", "%v", err)
	}
	if !sq.From.IsZero() && !sq.To.IsZero() && !sq.To.After(sq.From) {
		return badField("to", "must be after from")
	}
	groups, total, err := app.ledger.store.SummarizeUsage(r.Context(), sq)
	if err != nil {
		return err
	}
	if groups == nil {
		groups = []usagelog.UsageTotals{}
	}
	v := summaryView{User: sq.User, GroupBy: sq.GroupBy, Currency: app.Currency, Groups: groups, Total: total}
	if !sq.From.IsZero() {
		v.From = &sq.From
	}
	if !sq.To.IsZero() {
		v.To = &sq.To
	}
	writeJSON(w, http.StatusOK, v)
	return nil
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

// listAudit answers GET /aitoken/audit: the audit trail, newest first.
func listAudit(app *App, w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "user", "action", "limit", "before"); err != nil {
		return err
	}
	q := r.URL.Query()
	aq := usagelog.AuditQuery{User: q.Get("user"), Action: q.Get("action")}
	var err error
	if aq.Limit, err = parseLimit(q.Get("limit"), 100); err != nil {
		return err
	}
	if s := q.Get("before"); s != "" {
		if aq.Before, err = strconv.ParseInt(s, 10, 64); err != nil || aq.Before <= 0 {
			return badField("before", "want the id of an audit entry (the next of the previous page)")
		}
	}
	entries, err := app.ledger.store.ListAudit(r.Context(), aq)
	if err != nil {
		return err
	}
	if entries == nil {
		entries = []usagelog.AuditEntry{}
	}
	resp := map[string]any{"entries": entries}
	if len(entries) == aq.Limit {
		resp["next"] = strconv.FormatInt(entries[len(entries)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}
