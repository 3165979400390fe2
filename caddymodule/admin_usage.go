package caddymodule

import (
	"errors"
	"net/http"
	"time"

	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// The admin API's usage reports: the records, and their totals.

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
