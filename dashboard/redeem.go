package dashboard

import (
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

// redeemDoor names the dashboard's counter of failed redeems, beside each
// API key's.
const redeemDoor = "dashboard"

// redeemErrors are the billing page's messages for a code refused.
var redeemErrors = []struct {
	err error
	msg string
}{
	{usagelog.ErrCodeUnknown, "billing.code_invalid"},
	{usagelog.ErrCodeVoid, "billing.code_void"},
	{usagelog.ErrCodeExpired, "billing.code_expired"},
	{usagelog.ErrCodeRedeemed, "billing.code_redeemed"},
	{money.ErrAmountRange, "billing.code_limit"},
}

// redeem redeems a prepaid code for the signed-in customer, through the
// workflow the account API uses (accounting.Books.RedeemCode), and shows
// the billing page with the credit or the reason it was refused. Failed
// attempts are counted against the customer, as against an API key.
func (d *Dashboard) redeem(w http.ResponseWriter, rq *request) {
	code := accounting.NormalizeCode(rq.PostFormValue("code"))
	if code == "" {
		d.renderBilling(w, rq, http.StatusBadRequest, "", "billing.code_missing")
		return
	}
	ctx, user := rq.Context(), rq.s.User
	counter, p := accounting.RedeemCounterKey(user, redeemDoor), accounting.DefaultRedeemPolicy
	blocked, reset, err := accounting.RedeemBlocked(ctx, rq.b.Redis, counter, p)
	if err != nil {
		d.fail(w, rq, "counting failed redeems", err)
		return
	}
	if blocked {
		w.Header().Set("Retry-After", strconv.FormatInt(max(int64((reset+time.Second-1)/time.Second), 1), 10))
		d.renderBilling(w, rq, http.StatusTooManyRequests, "", "billing.code_throttled")
		return
	}
	red, err := rq.b.Books.RedeemCode(ctx, user, code)
	var re *accounting.RedisError
	if err != nil && !errors.As(err, &re) {
		if accounting.RedeemFailed(err) {
			if cerr := accounting.CountRedeemFailure(ctx, rq.b.Redis, counter, p); cerr != nil {
				d.log.Warn("dashboard: counting a failed redeem", zap.String("user", user), zap.Error(cerr))
			}
		}
		for _, e := range redeemErrors {
			if errors.Is(err, e.err) {
				status := http.StatusBadRequest
				if e.err == usagelog.ErrCodeRedeemed {
					status = http.StatusConflict
				}
				d.renderBilling(w, rq, status, "", e.msg)
				return
			}
		}
		d.fail(w, rq, "redeeming a code", err)
		return
	}
	// With Redis behind (re != nil) the credit is recorded and the repair
	// pass applies it: the customer is told it is redeemed.
	flash := strings.ReplaceAll(rq.t("billing.redeemed"), "{amount}", accounting.FormatAmount(red.Code.Amount)+" "+d.cfg.Currency)
	d.renderBillingFlash(w, rq, http.StatusOK, "", flash, "")
}
