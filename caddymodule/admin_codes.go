package caddymodule

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/cnaitoken/caddy-aitoken/accounting"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// The admin API's prepaid codes: mint (the secrets are in that answer
// only), list and void. Customers redeem them through the account API or
// the dashboard (accounting.Books.RedeemCode).

// postCodes answers POST /aitoken/codes {"amount","count","expires_at",
// "note"} with 201 and the new codes, each with its secret.
func postCodes(app *App, w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Amount    *money.Nanos `json:"amount"`
		Count     *int         `json:"count"`
		ExpiresAt *time.Time   `json:"expires_at"`
		Note      string       `json:"note"`
	}
	if err := readJSON(r, &in); err != nil {
		if errors.Is(err, money.ErrAmountRange) || errors.Is(err, money.ErrBadAmount) {
			return badField("amount", "%v", err)
		}
		return bodyError(err)
	}
	if in.Amount == nil {
		return badField("amount", "required: a positive decimal string like \"10.00\"")
	}
	m := accounting.Mint{Amount: *in.Amount, Count: 1, ExpiresAt: in.ExpiresAt, Note: in.Note}
	if in.Count != nil {
		m.Count = *in.Count
	}
	codes, err := app.books().MintCodes(r.Context(), m)
	var me *accounting.MintError
	if errors.As(err, &me) {
		return badField(me.Field, "%s", me.Problem)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"codes": codes})
	return nil
}

// listCodes answers GET /aitoken/codes?status=&limit=&cursor=: codes
// newest first, without secrets, and the cursor of the next page when
// there may be one.
func listCodes(app *App, w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "status", "limit", "cursor"); err != nil {
		return err
	}
	qv := r.URL.Query()
	q := usagelog.CodeQuery{Status: qv.Get("status"), After: qv.Get("cursor")}
	switch q.Status {
	case "", usagelog.CodeUnused, usagelog.CodeRedeemed, usagelog.CodeVoid, usagelog.CodeExpired:
	default:
		return badField("status", "want unused, redeemed, void or expired")
	}
	var err error
	if q.Limit, err = parseLimit(qv.Get("limit"), 100); err != nil {
		return err
	}
	codes, err := app.ledger.store.ListCodes(r.Context(), q)
	if errors.Is(err, usagelog.ErrNotFound) {
		return badField("cursor", "no code %s", strconv.Quote(q.After))
	}
	if err != nil {
		return err
	}
	if codes == nil {
		codes = []usagelog.Code{}
	}
	resp := map[string]any{"codes": codes}
	if len(codes) == q.Limit {
		resp["next"] = codes[len(codes)-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// deleteCode voids an unused code; a redeemed one is 409.
func deleteCode(app *App, w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	id := r.PathValue("id")
	c, err := app.books().VoidCode(r.Context(), id)
	switch {
	case errors.Is(err, usagelog.ErrNotFound):
		return notFound("code", id)
	case errors.Is(err, usagelog.ErrCodeRedeemed):
		return adminErr(http.StatusConflict, "code "+strconv.Quote(id)+" was redeemed: it cannot be voided")
	case err != nil:
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}
