package payments

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// Event is a verified Stripe event: what identifies it, and its
// data.object as sent.
type Event struct {
	ID         string
	Type       string
	APIVersion string
	Created    int64
	Object     json.RawMessage
}

// Config is what the rules need to know of the gateway.
type Config struct {
	// Currency is the ISO code balances are kept in. A payment in another
	// currency is recorded and not credited.
	Currency string
}

// Outcomes Apply reports (stored with the event, and logged).
const (
	OutcomeCredited          = "credited"
	OutcomeAlreadyCredited   = "already_credited"
	OutcomePending           = "pending"
	OutcomeFailed            = "failed"
	OutcomeExpired           = "expired"
	OutcomeNoPayment         = "no_payment_required"
	OutcomeCurrencyMismatch  = "currency_mismatch"
	OutcomeUnapplied         = "unapplied"
	OutcomeAlreadyUnapplied  = "already_unapplied"
	OutcomeRefundDebited     = "refund_debited"
	OutcomeRefundStale       = "refund_stale"
	OutcomeRefundWaiting     = "refund_waiting"
	OutcomeNothingToTakeBack = "nothing_to_take_back"
	OutcomeDisputeHeld       = "dispute_held"
	OutcomeDisputeReleased   = "dispute_released"
	OutcomeDisputeLost       = "dispute_lost"
	OutcomeDisputeUnchanged  = "dispute_unchanged"
	OutcomeDisputeWaiting    = "dispute_waiting"
	OutcomeIgnored           = "ignored"
	OutcomeMalformed         = "malformed"
)

// StatusUnapplied is the status of a paid top-up that credits nobody: the
// user it names was erased, never existed, or is not the user the top-up
// was started for, or it names no user at all, or its amount would take
// the balance past money.MaxNanos. Stripe holds the money; the operator
// refunds it there.
const StatusUnapplied = "unapplied"

// Reasons a paid top-up is left unapplied (Result.Reason).
const (
	ReasonNoUser       = "no_user"
	ReasonUnknownUser  = "unknown_user"
	ReasonErasedUser   = "erased_user"
	ReasonUserMismatch = "user_mismatch"
	ReasonAmountRange  = "amount_out_of_range"
)

// Result is what Apply did with an event.
type Result struct {
	// Outcome is one of the Outcome constants.
	Outcome string
	// Payment is the business key (usagelog.Payment.Ref) of the top-up a
	// Checkout Session event recorded; empty for other events.
	Payment string
	// Reason tells why a top-up is unapplied (the Reason constants); empty
	// unless Outcome is OutcomeUnapplied or OutcomeAlreadyUnapplied.
	Reason string
}

// Ledger entry kinds of Stripe money movements.
const (
	KindTopup   = "topup"
	KindRefund  = "refund"
	KindDispute = "dispute"
)

// Apply makes the changes ev calls for through tx, and returns what it did.
// The rules:
//
//   - checkout.session.completed with payment_status "paid", and
//     checkout.session.async_payment_succeeded, credit amount_total to the
//     user in client_reference_id, once per session (ledger ref
//     "credit:<session>"). Unpaid sessions are recorded as pending; a
//     currency other than cfg.Currency is recorded and not credited. A
//     paid session whose user is erased or unknown, names no user, names
//     another user than the top-up the gateway started for it, or whose
//     amount would take the balance past money.MaxNanos, is recorded as
//     StatusUnapplied (OutcomeUnapplied) and never credited.
//   - charge.refunded debits the newly refunded part of that charge's
//     cumulative amount_refunded (ledger ref "refund:<charge>:<cumulative>"),
//     in proportion to what the payment credited and to the payment's whole
//     amount; the refunds of all the charges of one payment together never
//     take back more than it credited. An older total is a no-op.
//   - charge.dispute.* holds (debits) the disputed part when a dispute
//     opens ("dispute:<id>:hold"), gives it back when it is won
//     ("dispute:<id>:release") and keeps it when lost (or debits it then,
//     "dispute:<id>:debit", if it was never held).
//
// Refunds and disputes that arrive before their top-up is credited wait
// and are settled when it is. Other event types are ignored. An object that
// cannot be read is reported as OutcomeMalformed, not as an error: Stripe
// sending it again would not help. Errors are the store's, and transient.
func Apply(tx *usagelog.PaymentTx, ev Event, cfg Config) (Result, error) {
	r := rules{tx: tx, cur: strings.ToUpper(cfg.Currency)}
	var outcome string
	var err error
	switch {
	case strings.HasPrefix(ev.Type, "checkout.session."):
		return r.session(ev)
	case ev.Type == "charge.refunded":
		outcome, err = r.refund(ev)
	case strings.HasPrefix(ev.Type, "charge.dispute."):
		outcome, err = r.dispute(ev)
	default:
		outcome = OutcomeIgnored
	}
	return Result{Outcome: outcome}, err
}

type rules struct {
	tx  *usagelog.PaymentTx
	cur string
}

// expandable is an ID field Stripe may send as a string or, expanded, as
// an object with an id.
type expandable string

func (e *expandable) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*e = expandable(s)
		return nil
	}
	var o struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return err
	}
	*e = expandable(o.ID)
	return nil
}

// The stable fields of the objects, read the same at every API version.
type (
	session struct {
		ID                 string            `json:"id"`
		Mode               string            `json:"mode"`
		ClientReferenceID  string            `json:"client_reference_id"`
		PaymentStatus      string            `json:"payment_status"`
		AmountTotal        int64             `json:"amount_total"`
		Currency           string            `json:"currency"`
		PaymentIntent      expandable        `json:"payment_intent"`
		Metadata           map[string]string `json:"metadata"`
		CurrencyConversion *struct {
			AmountTotal    int64  `json:"amount_total"`
			SourceCurrency string `json:"source_currency"`
		} `json:"currency_conversion"`
	}
	charge struct {
		ID             string            `json:"id"`
		Amount         int64             `json:"amount"`
		AmountRefunded int64             `json:"amount_refunded"`
		Currency       string            `json:"currency"`
		PaymentIntent  expandable        `json:"payment_intent"`
		Metadata       map[string]string `json:"metadata"`
	}
	dispute struct {
		ID            string     `json:"id"`
		Amount        int64      `json:"amount"`
		Currency      string     `json:"currency"`
		Status        string     `json:"status"`
		Charge        expandable `json:"charge"`
		PaymentIntent expandable `json:"payment_intent"`
	}
)

func decode(ev Event, v any, id *string) error {
	if err := json.Unmarshal(ev.Object, v); err != nil {
		return err
	}
	if *id == "" {
		return fmt.Errorf("object without an id")
	}
	return nil
}

// Top-up statuses. A top-up is waiting while it may still be paid; after
// that its status is final and it credited what it will ever credit.
const (
	statusPaid = "paid"
)

func waiting(status string) bool {
	switch status {
	case "creating", "open", "error", OutcomePending:
		return true
	}
	return false
}

func (r rules) session(ev Event) (Result, error) {
	var s session
	if err := decode(ev, &s, &s.ID); err != nil {
		return Result{Outcome: OutcomeMalformed}, nil
	}
	if s.Mode != "" && s.Mode != "payment" {
		return Result{Outcome: OutcomeIgnored}, nil
	}
	p, err := r.findTopup(s)
	if err != nil {
		return Result{}, err
	}
	p.SessionID = s.ID
	if s.PaymentIntent != "" {
		p.PaymentIntent = string(s.PaymentIntent)
	}
	p.AmountMinor, p.Currency = s.AmountTotal, strings.ToUpper(s.Currency)
	// The user a top-up the gateway started was recorded for is the one it
	// may credit: a session naming someone else credits nobody.
	mismatch := false
	if s.ClientReferenceID != "" {
		if p.User != "" && p.User != s.ClientReferenceID {
			mismatch = true
		} else {
			p.User = s.ClientReferenceID
		}
	}
	res := Result{Payment: p.Ref}
	switch p.Status {
	case statusPaid:
		if err := r.tx.PutPayment(&p); err != nil {
			return Result{}, err
		}
		res.Outcome = OutcomeAlreadyCredited
		return res, r.settleIntent(p)
	case StatusUnapplied:
		// Recorded and alerted once; a later event of the session adds
		// nothing.
		res.Outcome = OutcomeAlreadyUnapplied
		return res, nil
	}

	var outcome string
	switch ev.Type {
	case "checkout.session.completed":
		switch s.PaymentStatus {
		case "paid":
			outcome, res.Reason, err = r.credit(&p, s, mismatch)
		case "no_payment_required":
			outcome = OutcomeNoPayment
		default:
			outcome = OutcomePending
		}
	case "checkout.session.async_payment_succeeded":
		outcome, res.Reason, err = r.credit(&p, s, mismatch)
	case "checkout.session.async_payment_failed":
		outcome = OutcomeFailed
	case "checkout.session.expired":
		outcome = OutcomeExpired
	default:
		return Result{Outcome: OutcomeIgnored}, nil
	}
	if err != nil {
		return Result{}, err
	}
	res.Outcome = outcome
	switch outcome {
	case OutcomeCredited:
	case OutcomeUnapplied:
		p.Status = StatusUnapplied
	default:
		p.Status = outcome
	}
	if err := r.tx.PutPayment(&p); err != nil {
		return Result{}, err
	}
	if waiting(p.Status) {
		return res, nil
	}
	return res, r.settleIntent(p)
}

// findTopup returns the top-up a session pays: by session, else by the
// topup_id the account API put in its metadata, else a new one.
func (r rules) findTopup(s session) (usagelog.Payment, error) {
	p, ok, err := r.tx.TopupBySession(s.ID)
	if err != nil || ok {
		return p, err
	}
	if id := s.Metadata["topup_id"]; id != "" {
		p, ok, err = r.tx.Payment("topup:" + id)
		if err != nil {
			return p, err
		}
		if ok && p.Kind == usagelog.PaymentTopup && (p.SessionID == "" || p.SessionID == s.ID) {
			return p, nil
		}
	}
	return usagelog.Payment{Ref: "topup:" + s.ID, Kind: usagelog.PaymentTopup}, nil
}

// credit credits a paid session to its user, or reports it unapplied and
// why.
func (r rules) credit(p *usagelog.Payment, s session, mismatch bool) (outcome, reason string, err error) {
	switch {
	case mismatch:
		return OutcomeUnapplied, ReasonUserMismatch, nil
	case p.User == "":
		return OutcomeUnapplied, ReasonNoUser, nil
	}
	switch status, err := r.tx.UserStatus(p.User); {
	case err != nil:
		return "", "", err
	case status == "":
		return OutcomeUnapplied, ReasonUnknownUser, nil
	case status != usagelog.UserActive:
		return OutcomeUnapplied, ReasonErasedUser, nil
	}
	amount, cur := s.AmountTotal, strings.ToUpper(s.Currency)
	if cur != r.cur && s.CurrencyConversion != nil && strings.EqualFold(s.CurrencyConversion.SourceCurrency, r.cur) {
		// Adaptive Pricing: the customer paid in their currency; the
		// session was made, and is credited, in ours.
		amount, cur = s.CurrencyConversion.AmountTotal, r.cur
	}
	if cur != r.cur {
		return OutcomeCurrencyMismatch, "", nil
	}
	credits, err := MinorToNanos(amount, cur)
	switch {
	case err != nil:
		return OutcomeUnapplied, ReasonAmountRange, nil
	case credits <= 0:
		return OutcomeNoPayment, "", nil
	}
	_, err = r.tx.AddLedger(p.User, credits, KindTopup, "Stripe top-up "+s.ID, "credit:"+s.ID)
	switch {
	case errors.Is(err, money.ErrAmountRange):
		// The credit, or the balance it would make, is beyond what a
		// balance can hold (and Redis would refuse it).
		return OutcomeUnapplied, ReasonAmountRange, nil
	case err != nil:
		return "", "", err
	}
	p.Status, p.Credited = statusPaid, credits
	return OutcomeCredited, "", nil
}

// settleIntent settles the refunds and disputes of a top-up's payment that
// were waiting for the top-up to be credited (or to fail).
func (r rules) settleIntent(p usagelog.Payment) error {
	charges, err := r.tx.ChargesByPaymentIntent(p.PaymentIntent)
	if err != nil {
		return err
	}
	for _, c := range charges {
		if _, err := r.settleCharge(&c, p, true); err != nil {
			return err
		}
		if err := r.tx.PutCharge(c); err != nil {
			return err
		}
	}
	disputes, err := r.tx.DisputesByPaymentIntent(p.PaymentIntent)
	if err != nil {
		return err
	}
	for _, d := range disputes {
		if _, err := r.settleDispute(&d, p, true); err != nil {
			return err
		}
		if err := r.tx.PutDispute(d); err != nil {
			return err
		}
	}
	return nil
}
