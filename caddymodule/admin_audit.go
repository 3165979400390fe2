package caddymodule

import (
	"net/http"
	"strconv"

	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

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
