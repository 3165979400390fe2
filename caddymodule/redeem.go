package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/accounting"
	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// This file is the account API's POST /v1/account/redeem: a customer
// redeems a prepaid code with their API key. The workflow (one ledger
// transaction, then the payments' idempotent credit) is accounting's;
// failed attempts are counted per key, against guessing.

// Errors of a redeem, in OpenAI's shape.
var (
	errCodeInvalid = &apiError{http.StatusBadRequest, "invalid_request_error", "invalid_code",
		"This code is not valid. Check it for typos.", "code"}
	errCodeVoid = &apiError{http.StatusBadRequest, "invalid_request_error", "code_void",
		"This code was cancelled by the issuer and cannot be redeemed.", "code"}
	errCodeExpired = &apiError{http.StatusBadRequest, "invalid_request_error", "code_expired",
		"This code has expired and cannot be redeemed.", "code"}
	errCodeRedeemed = &apiError{http.StatusConflict, "invalid_request_error", "code_already_redeemed",
		"This code has already been redeemed.", "code"}
	errCodeBalanceLimit = &apiError{http.StatusBadRequest, "invalid_request_error", "balance_limit_exceeded",
		"This code would take your balance above the largest this gateway keeps.", "code"}
)

// errRedeemRate refuses a redeem after too many failed ones with the key.
func errRedeemRate(limit int, win, reset time.Duration) *apiError {
	return &apiError{http.StatusTooManyRequests, "requests", "rate_limit_exceeded",
		"Too many failed redeems: at most " + strconv.Itoa(limit) + " per " + shortDuration(win) +
			" for this key. Try again in " + formatReset(reset) + ".", ""}
}

// redeemResponse is the answer to POST /v1/account/redeem.
type redeemResponse struct {
	Object string `json:"object"`
	// CodeID is the redeemed code's ID (never its secret).
	CodeID string `json:"code_id"`
	// Amount is what the code credited.
	Amount   money.Nanos `json:"amount"`
	Currency string      `json:"currency"`
	// Balance is the balance with the credit; null while the credit is
	// recorded but not yet in the live balance (Redis failed just then:
	// it is applied within a minute).
	Balance *money.Nanos `json:"balance"`
}

// redeemError answers a refused redeem; it reports whether the failure
// is the code's (counted against the key).
func redeemError(err error) (*apiError, bool) {
	switch {
	case errors.Is(err, usagelog.ErrCodeUnknown):
		return errCodeInvalid, true
	case errors.Is(err, usagelog.ErrCodeVoid):
		return errCodeVoid, true
	case errors.Is(err, usagelog.ErrCodeExpired):
		return errCodeExpired, true
	case errors.Is(err, usagelog.ErrCodeRedeemed):
		return errCodeRedeemed, true
	case errors.Is(err, money.ErrAmountRange):
		return errCodeBalanceLimit, false
	case errors.Is(err, usagelog.ErrUserDeleted), errors.Is(err, usagelog.ErrNotFound):
		// Erased since the key was checked: its keys are revoked.
		return errInvalidKey, false
	}
	return nil, false
}

func (h *AccountAPI) redeem(w http.ResponseWriter, r *http.Request, g billing.Grant) {
	if _, ok := h.ledgerStore(w); !ok {
		return
	}
	var in struct {
		Code *string `json:"code"`
	}
	body, ok := readAccountBody(w, r)
	if !ok {
		return
	}
	if err := json.Unmarshal(body, &in); err != nil {
		errInvalidRequest("the request body is not a valid JSON object", "").write(w)
		return
	}
	if in.Code == nil || accounting.NormalizeCode(*in.Code) == "" {
		errInvalidRequest(`you must provide a code, like {"code":"aitc-…"}`, "code").write(w)
		return
	}
	ctx := r.Context()
	rdb := h.app.accounts.Client()
	counter, p := accounting.RedeemCounterKey(g.User, g.KeyID), accounting.DefaultRedeemPolicy
	blocked, reset, err := accounting.RedeemBlocked(ctx, rdb, counter, p)
	if err != nil {
		h.log.Error("redis unavailable; redeem refused", zap.String("key_id", g.KeyID), zap.Error(err))
		errUnavailable.write(w)
		return
	}
	if blocked {
		h.log.Info("redeem refused: too many failed redeems with this key", zap.String("key_id", g.KeyID))
		w.Header().Set("Retry-After", strconv.FormatInt(max(int64((reset+time.Second-1)/time.Second), 1), 10))
		errRedeemRate(p.Failures, p.Window, reset).write(w)
		return
	}
	red, err := h.app.books().RedeemCode(ctx, g.User, *in.Code)
	var re *accounting.RedisError
	if err != nil && !errors.As(err, &re) {
		apiErr, counted := redeemError(err)
		if counted {
			if cerr := accounting.CountRedeemFailure(ctx, rdb, counter, p); cerr != nil {
				h.log.Warn("counting a failed redeem", zap.String("key_id", g.KeyID), zap.Error(cerr))
			}
		}
		if apiErr == nil {
			h.log.Error("redeeming a code failed", zap.String("user", g.User), zap.Error(err))
			apiErr = errUnavailable
		}
		apiErr.write(w)
		return
	}
	resp := redeemResponse{Object: "redemption", CodeID: red.Code.ID, Amount: red.Code.Amount, Currency: h.app.Currency}
	if re == nil {
		if bal, _, err := h.app.accounts.Balance(ctx, g.User); err == nil {
			resp.Balance = &bal
		}
	}
	writeJSON(w, http.StatusOK, resp)
}
