package payments

import (
	"fmt"
	"strings"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// The rules of refunds and disputes: both take back (part of) what a
// top-up credited, in proportion to the part of the payment they concern.
// A payment may have several charges (each with its own refunds): every
// charge's refunds are measured against the payment's whole amount, and
// added up across its charges, so together they never take back more than
// the payment credited, and each refunded minor unit is debited once.

// topupFor finds the top-up a charge paid.
func (r rules) topupFor(pi string) (usagelog.Payment, bool, error) {
	return r.tx.TopupByPaymentIntent(pi)
}

func (r rules) refund(ev Event) (string, error) {
	var c charge
	if err := decode(ev, &c, &c.ID); err != nil {
		return OutcomeMalformed, nil
	}
	ch, _, err := r.tx.Charge(c.ID)
	if err != nil {
		return "", err
	}
	ch.ID = c.ID
	if c.PaymentIntent != "" {
		ch.PaymentIntent = string(c.PaymentIntent)
	}
	ch.Amount, ch.Currency = c.Amount, strings.ToUpper(c.Currency)
	stale := c.AmountRefunded <= ch.Refunded
	if !stale {
		// amount_refunded is cumulative and events come in any order:
		// only ever move it forward.
		ch.Refunded = c.AmountRefunded
	}
	p, ok, err := r.topupFor(ch.PaymentIntent)
	if err != nil {
		return "", err
	}
	outcome, err := r.settleCharge(&ch, p, ok)
	if err != nil {
		return "", err
	}
	if err := r.tx.PutCharge(ch); err != nil {
		return "", err
	}
	if stale {
		return OutcomeRefundStale, nil
	}
	return outcome, nil
}

// settleCharge debits the part of a charge's refunds not yet debited.
func (r rules) settleCharge(ch *usagelog.StripeCharge, p usagelog.Payment, found bool) (string, error) {
	if ch.Refunded <= ch.Debited {
		return OutcomeRefundStale, nil
	}
	row := usagelog.Payment{Kind: usagelog.PaymentRefund, User: p.User, TopupID: p.TopupID,
		SessionID: p.SessionID, PaymentIntent: ch.PaymentIntent, ChargeID: ch.ID,
		AmountMinor: ch.Refunded - ch.Debited, Currency: ch.Currency}
	waitRef := "refund:" + ch.ID + ":waiting"
	if !found || waiting(p.Status) {
		row.Ref, row.Status = waitRef, "waiting_for_topup"
		return OutcomeRefundWaiting, r.tx.PutPayment(&row)
	}
	if err := r.tx.DeletePayment(waitRef); err != nil {
		return "", err
	}
	row.Ref, row.Status = fmt.Sprintf("refund:%s:%d", ch.ID, ch.Refunded), "refunded"
	outcome := OutcomeNothingToTakeBack
	if p.Status == statusPaid {
		// What the payment's other charges had refunded and debited, in
		// the payment's minor units, then this charge's before and after.
		others, err := r.tx.ChargesByPaymentIntent(ch.PaymentIntent)
		if err != nil {
			return "", err
		}
		whole := wholeOf(p, ch.Currency, ch.Amount)
		var before int64
		for _, o := range others {
			if o.ID != ch.ID {
				before = addClamped(before, inPayment(p, o.Currency, o.Amount, o.Debited))
			}
		}
		after := addClamped(before, inPayment(p, ch.Currency, ch.Amount, ch.Refunded))
		before = addClamped(before, inPayment(p, ch.Currency, ch.Amount, ch.Debited))
		debit := Share(p.Credited, after, whole) - Share(p.Credited, before, whole)
		if debit > 0 {
			if _, err := r.tx.AddLedger(p.User, -debit, KindRefund, "Stripe refund of "+ch.ID, row.Ref); err != nil {
				return "", err
			}
			row.Credited, outcome = -debit, OutcomeRefundDebited
		}
	}
	ch.Debited = ch.Refunded
	return outcome, r.tx.PutPayment(&row)
}

// wholeOf is the amount, in minor units, that a refund or dispute of a
// charge is measured against: the payment's amount when it is in the
// charge's currency (always, for Stripe's charges of one payment), else the
// charge's own amount.
func wholeOf(p usagelog.Payment, currency string, chargeAmount int64) int64 {
	if p.AmountMinor > 0 && (strings.EqualFold(currency, p.Currency) || chargeAmount <= 0) {
		return p.AmountMinor
	}
	if chargeAmount > 0 {
		return chargeAmount
	}
	return p.AmountMinor
}

// inPayment converts v minor units of a charge to the payment's minor units:
// the same number in the payment's currency, else the same share of the
// payment as of the charge.
func inPayment(p usagelog.Payment, currency string, chargeAmount, v int64) int64 {
	if v <= 0 {
		return 0
	}
	if strings.EqualFold(currency, p.Currency) || chargeAmount <= 0 || p.AmountMinor <= 0 {
		return v
	}
	return int64(Share(money.Nanos(p.AmountMinor), v, chargeAmount))
}

// addClamped adds two non-negative amounts, saturating instead of
// overflowing (Share clamps any part above the whole anyway).
func addClamped(a, b int64) int64 {
	if s := a + b; s >= a {
		return s
	}
	return 1<<63 - 1
}

// finalDispute tells dispute statuses that no longer change.
func finalDispute(status string) bool {
	return status == "won" || status == "lost" || status == "warning_closed"
}

func (r rules) dispute(ev Event) (string, error) {
	var d dispute
	if err := decode(ev, &d, &d.ID); err != nil {
		return OutcomeMalformed, nil
	}
	dp, _, err := r.tx.Dispute(d.ID)
	if err != nil {
		return "", err
	}
	dp.ID, dp.Amount, dp.Currency = d.ID, d.Amount, strings.ToUpper(d.Currency)
	if d.Charge != "" {
		dp.ChargeID = string(d.Charge)
	}
	if d.PaymentIntent != "" {
		dp.PaymentIntent = string(d.PaymentIntent)
	}
	if dp.PaymentIntent == "" && dp.ChargeID != "" {
		ch, ok, err := r.tx.Charge(dp.ChargeID)
		if err != nil {
			return "", err
		}
		if ok {
			dp.PaymentIntent = ch.PaymentIntent
		}
	}
	// Events come in any order: a closed dispute stays closed.
	closed := finalDispute(dp.Status)
	if !closed && d.Status != "" {
		dp.Status = d.Status
	}
	p, ok, err := r.topupFor(dp.PaymentIntent)
	if err != nil {
		return "", err
	}
	outcome, err := r.settleDispute(&dp, p, ok)
	if err != nil {
		return "", err
	}
	if closed && outcome != OutcomeDisputeWaiting {
		outcome = OutcomeDisputeUnchanged
	}
	return outcome, r.tx.PutDispute(dp)
}

// settleDispute holds, releases or keeps the disputed part of a credit.
func (r rules) settleDispute(dp *usagelog.StripeDispute, p usagelog.Payment, found bool) (string, error) {
	row := usagelog.Payment{Ref: "dispute:" + dp.ID, Kind: usagelog.PaymentDispute, User: p.User,
		TopupID: p.TopupID, SessionID: p.SessionID, PaymentIntent: dp.PaymentIntent, ChargeID: dp.ChargeID,
		DisputeID: dp.ID, AmountMinor: dp.Amount, Currency: dp.Currency, Status: dp.Status}
	if row.Status == "" {
		row.Status = "open"
	}
	if !found || waiting(p.Status) {
		return OutcomeDisputeWaiting, r.tx.PutPayment(&row)
	}
	outcome := OutcomeDisputeUnchanged
	if p.Status != statusPaid {
		return OutcomeNothingToTakeBack, r.tx.PutPayment(&row)
	}
	var chargeAmount int64
	if ch, ok, err := r.tx.Charge(dp.ChargeID); err != nil {
		return "", err
	} else if ok {
		chargeAmount = ch.Amount
	}
	whole := wholeOf(p, dp.Currency, chargeAmount)
	take := func(ref string) error {
		amt := Share(p.Credited, dp.Amount, whole)
		if amt <= 0 {
			return nil
		}
		if _, err := r.tx.AddLedger(p.User, -amt, KindDispute, "Stripe dispute "+dp.ID, ref); err != nil {
			return err
		}
		dp.Held = amt
		return nil
	}
	switch {
	case dp.Status == "won" || dp.Status == "warning_closed":
		if dp.Held > 0 {
			if _, err := r.tx.AddLedger(p.User, dp.Held, KindDispute, "Stripe dispute "+dp.ID+" won",
				"dispute:"+dp.ID+":release"); err != nil {
				return "", err
			}
			dp.Held, outcome = 0, OutcomeDisputeReleased
		}
	case dp.Status == "lost":
		if dp.Held == 0 {
			if err := take("dispute:" + dp.ID + ":debit"); err != nil {
				return "", err
			}
		}
		outcome = OutcomeDisputeLost
	default:
		if dp.Held == 0 {
			if err := take("dispute:" + dp.ID + ":hold"); err != nil {
				return "", err
			}
			outcome = OutcomeDisputeHeld
		}
	}
	row.Credited = -dp.Held
	return outcome, r.tx.PutPayment(&row)
}
