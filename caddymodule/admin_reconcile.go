package caddymodule

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// postReconcile answers POST /aitoken/reconcile?apply=: the differences
// between the ledger and Redis, and with apply=true Redis rebuilt from the
// ledger (accounting.Books.Reconcile).
func postReconcile(app *App, w http.ResponseWriter, r *http.Request) error {
	apply := false
	if s := r.URL.Query().Get("apply"); s != "" {
		var err error
		if apply, err = strconv.ParseBool(s); err != nil {
			return badField("apply", "want true or false")
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Minute)
	defer cancel()
	rep, err := app.books().Reconcile(ctx, apply)
	if err != nil {
		return adminErr(http.StatusServiceUnavailable, "reconcile: "+err.Error())
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
