package stripe

import (
	"fmt"
	"strings"

	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// The rules of refunds and disputes: both take back (part of) what a
// top-up credited, in proportion to the part of its charge they concern.

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
	whole := ch.Amount
	if whole <= 0 {
		whole = p.AmountMinor
	}
	outcome := OutcomeNothingToTakeBack
	if p.Status == statusPaid {
		debit := Share(p.Credited, ch.Refunded, whole) - Share(p.Credited, ch.Debited, whole)
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
	whole := p.AmountMinor
	if ch, ok, err := r.tx.Charge(dp.ChargeID); err != nil {
		return "", err
	} else if ok && ch.Amount > 0 {
		whole = ch.Amount
	}
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
