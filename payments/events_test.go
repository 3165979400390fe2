package payments

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

const unit = money.NanosPerUnit

type ledger struct {
	t    *testing.T
	s    *usagelog.Store
	cur  string
	user string
	n    int
}

func newLedger(t *testing.T, cur string) *ledger {
	t.Helper()
	s, err := usagelog.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	u, err := s.CreateUser(t.Context(), usagelog.User{})
	if err != nil {
		t.Fatal(err)
	}
	return &ledger{t: t, s: s, cur: cur, user: u.ID}
}

// send applies an event with a fresh ID and returns its outcome.
func (l *ledger) send(typ string, obj any) string {
	l.t.Helper()
	l.n++
	return l.sendID(fmt.Sprintf("evt_%d", l.n), typ, obj)
}

func (l *ledger) sendID(id, typ string, obj any) string {
	l.t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		l.t.Fatal(err)
	}
	var outcome string
	_, dup, err := l.s.StripeEvent(l.t.Context(), usagelog.StripeEventInfo{ID: id, Type: typ},
		func(tx *usagelog.PaymentTx) (string, error) {
			res, err := Apply(tx, Event{ID: id, Type: typ, Object: raw}, Config{Currency: l.cur})
			outcome = res.Outcome
			return outcome, err
		})
	if err != nil {
		l.t.Fatalf("%s %s: %v", typ, id, err)
	}
	if dup {
		return "dup"
	}
	return outcome
}

func (l *ledger) balance() money.Nanos {
	l.t.Helper()
	b, err := l.s.LedgerBalance(l.t.Context(), l.user)
	if err != nil {
		l.t.Fatal(err)
	}
	return b
}

func (l *ledger) want(outcome, got string, balance money.Nanos) {
	l.t.Helper()
	if got != outcome {
		l.t.Fatalf("outcome %q, want %q", got, outcome)
	}
	if b := l.balance(); b != balance {
		l.t.Fatalf("balance %s, want %s", b, balance)
	}
}

func (l *ledger) payments() map[string]usagelog.Payment {
	l.t.Helper()
	ps, err := l.s.ListPayments(l.t.Context(), "", 1000)
	if err != nil {
		l.t.Fatal(err)
	}
	out := map[string]usagelog.Payment{}
	for _, p := range ps {
		out[p.Ref] = p
	}
	return out
}

type obj = map[string]any

func (l *ledger) session(id, status string, amount int64, cur string) obj {
	return obj{"id": id, "object": "checkout.session", "mode": "payment", "client_reference_id": l.user,
		"payment_status": status, "amount_total": amount, "currency": cur, "payment_intent": "pi_" + id}
}

func chargeObj(id, pi string, amount, refunded int64) obj {
	return obj{"id": id, "object": "charge", "amount": amount, "amount_refunded": refunded, "currency": "usd",
		"payment_intent": pi, "refunded": refunded == amount}
}

func disputeObj(id, ch, pi, status string, amount int64) obj {
	return obj{"id": id, "object": "dispute", "amount": amount, "currency": "usd", "status": status,
		"charge": ch, "payment_intent": pi}
}

func TestSessionCreditsOnce(t *testing.T) {
	l := newLedger(t, "USD")
	s := l.session("cs_1", "paid", 2000, "usd")
	l.want(OutcomeCredited, l.sendID("evt_a", "checkout.session.completed", s), 20*unit)
	l.want("dup", l.sendID("evt_a", "checkout.session.completed", s), 20*unit)
	l.want(OutcomeAlreadyCredited, l.send("checkout.session.async_payment_succeeded", s), 20*unit)
	p := l.payments()["topup:cs_1"]
	if p.Status != "paid" || p.Credited != 20*unit || p.PaymentIntent != "pi_cs_1" || p.User != l.user || p.Currency != "USD" {
		t.Fatalf("payment %+v", p)
	}
}

func TestAsyncSession(t *testing.T) {
	l := newLedger(t, "USD")
	l.want(OutcomePending, l.send("checkout.session.completed", l.session("cs_1", "unpaid", 2000, "usd")), 0)
	if p := l.payments()["topup:cs_1"]; p.Status != OutcomePending {
		t.Fatalf("payment %+v", p)
	}
	l.want(OutcomeCredited, l.send("checkout.session.async_payment_succeeded", l.session("cs_1", "paid", 2000, "usd")), 20*unit)
	// A failed async payment of another session credits nothing.
	l.want(OutcomePending, l.send("checkout.session.completed", l.session("cs_2", "unpaid", 1000, "usd")), 20*unit)
	l.want(OutcomeFailed, l.send("checkout.session.async_payment_failed", l.session("cs_2", "unpaid", 1000, "usd")), 20*unit)
}

func TestSessionNotCredited(t *testing.T) {
	l := newLedger(t, "USD")
	l.want(OutcomeCurrencyMismatch, l.send("checkout.session.completed", l.session("cs_eur", "paid", 2000, "eur")), 0)
	if p := l.payments()["topup:cs_eur"]; p.Status != OutcomeCurrencyMismatch || p.Credited != 0 || p.AmountMinor != 2000 || p.Currency != "EUR" {
		t.Fatalf("payment %+v", p)
	}
	s := l.session("cs_sub", "paid", 2000, "usd")
	s["mode"] = "subscription"
	l.want(OutcomeIgnored, l.send("checkout.session.completed", s), 0)
	l.want(OutcomeIgnored, l.send("customer.created", obj{"id": "cus_1"}), 0)
	l.want(OutcomeMalformed, l.send("charge.refunded", obj{"amount": "lots"}), 0)

	// Adaptive Pricing: paid in EUR, made (and credited) in USD.
	s = l.session("cs_ap", "paid", 1850, "eur")
	s["currency_conversion"] = obj{"amount_total": 2000, "amount_subtotal": 2000, "fx_rate": "0.925", "source_currency": "usd"}
	l.want(OutcomeCredited, l.send("checkout.session.completed", s), 20*unit)
}

func TestZeroDecimalCurrency(t *testing.T) {
	l := newLedger(t, "JPY")
	l.want(OutcomeCredited, l.send("checkout.session.completed", l.session("cs_1", "paid", 500, "jpy")), 500*unit)
}

// A top-up the account API started is found by its metadata when the
// session reaches the webhook before the gateway recorded it.
func TestTopupByMetadata(t *testing.T) {
	l := newLedger(t, "USD")
	if err := l.s.CreateTopup(t.Context(), &usagelog.Payment{TopupID: "tu_1", User: l.user, AmountMinor: 2000, Currency: "USD"}); err != nil {
		t.Fatal(err)
	}
	s := l.session("cs_1", "paid", 2000, "usd")
	delete(s, "client_reference_id")
	s["metadata"] = obj{"topup_id": "tu_1", "user": l.user}
	l.want(OutcomeCredited, l.send("checkout.session.completed", s), 20*unit)
	ps := l.payments()
	if p := ps["topup:tu_1"]; p.Status != "paid" || p.SessionID != "cs_1" || len(ps) != 1 {
		t.Fatalf("payments %+v", ps)
	}
}

func TestPartialRefunds(t *testing.T) {
	l := newLedger(t, "USD")
	l.want(OutcomeCredited, l.send("checkout.session.completed", l.session("cs_1", "paid", 2000, "usd")), 20*unit)
	l.want(OutcomeRefundDebited, l.send("charge.refunded", chargeObj("ch_1", "pi_cs_1", 2000, 500)), 15*unit)
	l.want(OutcomeRefundDebited, l.send("charge.refunded", chargeObj("ch_1", "pi_cs_1", 2000, 800)), 12*unit)
	// The older event, delivered late, never gives anything back.
	l.want(OutcomeRefundStale, l.send("charge.refunded", chargeObj("ch_1", "pi_cs_1", 2000, 500)), 12*unit)
	l.want(OutcomeRefundStale, l.send("charge.refunded", chargeObj("ch_1", "pi_cs_1", 2000, 800)), 12*unit)
	l.want(OutcomeRefundDebited, l.send("charge.refunded", chargeObj("ch_1", "pi_cs_1", 2000, 2000)), 0)
	ps := l.payments()
	for ref, want := range map[string]money.Nanos{"refund:ch_1:500": -5 * unit, "refund:ch_1:800": -3 * unit, "refund:ch_1:2000": -12 * unit} {
		if p := ps[ref]; p.Credited != want || p.Kind != usagelog.PaymentRefund || p.User != l.user || p.Status != "refunded" {
			t.Errorf("%s: %+v", ref, p)
		}
	}
	if ps["refund:ch_1:800"].AmountMinor != 300 {
		t.Errorf("refund of 3.00 recorded as %d", ps["refund:ch_1:800"].AmountMinor)
	}
}

// A refund delivered before its top-up is credited waits, and is debited
// together with the credit.
func TestRefundBeforeCredit(t *testing.T) {
	l := newLedger(t, "USD")
	l.want(OutcomeRefundWaiting, l.send("charge.refunded", chargeObj("ch_1", "pi_cs_1", 2000, 500)), 0)
	if p := l.payments()["refund:ch_1:waiting"]; p.Status != "waiting_for_topup" {
		t.Fatalf("waiting refund %+v", p)
	}
	l.want(OutcomeCredited, l.send("checkout.session.completed", l.session("cs_1", "paid", 2000, "usd")), 15*unit)
	ps := l.payments()
	if _, ok := ps["refund:ch_1:waiting"]; ok || ps["refund:ch_1:500"].Credited != -5*unit {
		t.Fatalf("payments %+v", ps)
	}
	// A refund of a payment that credited nothing takes nothing back.
	l.want(OutcomeCurrencyMismatch, l.send("checkout.session.completed", l.session("cs_2", "paid", 2000, "eur")), 15*unit)
	l.want(OutcomeNothingToTakeBack, l.send("charge.refunded", chargeObj("ch_2", "pi_cs_2", 2000, 2000)), 15*unit)
}

func TestDisputes(t *testing.T) {
	l := newLedger(t, "USD")
	l.want(OutcomeCredited, l.send("checkout.session.completed", l.session("cs_1", "paid", 2000, "usd")), 20*unit)
	l.want(OutcomeDisputeHeld, l.send("charge.dispute.created", disputeObj("dp_1", "ch_1", "pi_cs_1", "needs_response", 2000)), 0)
	l.want(OutcomeDisputeUnchanged, l.send("charge.dispute.updated", disputeObj("dp_1", "ch_1", "pi_cs_1", "under_review", 2000)), 0)
	l.want(OutcomeDisputeReleased, l.send("charge.dispute.closed", disputeObj("dp_1", "ch_1", "pi_cs_1", "won", 2000)), 20*unit)
	// Late events of a closed dispute change nothing.
	l.want(OutcomeDisputeUnchanged, l.send("charge.dispute.created", disputeObj("dp_1", "ch_1", "pi_cs_1", "needs_response", 2000)), 20*unit)
	if p := l.payments()["dispute:dp_1"]; p.Status != "won" || p.Credited != 0 {
		t.Fatalf("won dispute %+v", p)
	}

	l.want(OutcomeCredited, l.send("checkout.session.completed", l.session("cs_2", "paid", 1000, "usd")), 30*unit)
	l.want(OutcomeDisputeHeld, l.send("charge.dispute.created", disputeObj("dp_2", "ch_2", "pi_cs_2", "needs_response", 1000)), 20*unit)
	l.want(OutcomeDisputeLost, l.send("charge.dispute.closed", disputeObj("dp_2", "ch_2", "pi_cs_2", "lost", 1000)), 20*unit)
	if p := l.payments()["dispute:dp_2"]; p.Status != "lost" || p.Credited != -10*unit {
		t.Fatalf("lost dispute %+v", p)
	}

	// Closed (lost) before the created event arrives: debited once.
	l.want(OutcomeCredited, l.send("checkout.session.completed", l.session("cs_3", "paid", 1000, "usd")), 30*unit)
	l.want(OutcomeDisputeLost, l.send("charge.dispute.closed", disputeObj("dp_3", "ch_3", "pi_cs_3", "lost", 1000)), 20*unit)
	l.want(OutcomeDisputeUnchanged, l.send("charge.dispute.created", disputeObj("dp_3", "ch_3", "pi_cs_3", "needs_response", 1000)), 20*unit)

	// A dispute before its top-up is credited waits for it.
	l.want(OutcomeDisputeWaiting, l.send("charge.dispute.created", disputeObj("dp_4", "ch_4", "pi_cs_4", "needs_response", 500)), 20*unit)
	l.want(OutcomeCredited, l.send("checkout.session.completed", l.session("cs_4", "paid", 1000, "usd")), 25*unit)
}

// A paid session that names an erased user, a user the ledger never knew,
// no user, or another user than the top-up the gateway started for it, is
// recorded as unapplied and credits nobody; later events of the session
// and a refund of it change nothing.
func TestUnappliedTopups(t *testing.T) {
	l := newLedger(t, "USD")
	erased, err := l.s.CreateUser(t.Context(), usagelog.User{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.s.EraseUser(t.Context(), erased.ID, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := l.s.CreateTopup(t.Context(), &usagelog.Payment{TopupID: "tu_m", User: l.user, AmountMinor: 2000, Currency: "USD"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		session, user, reason string
		edit                  func(obj)
	}{
		{"cs_erased", erased.ID, ReasonErasedUser, nil},
		{"cs_unknown", "u_never", ReasonUnknownUser, nil},
		{"cs_none", "", ReasonNoUser, func(o obj) { delete(o, "client_reference_id") }},
		{"cs_mismatch", erased.ID, ReasonUserMismatch, func(o obj) { o["metadata"] = obj{"topup_id": "tu_m"} }},
	} {
		s := l.session(c.session, "paid", 2000, "usd")
		s["client_reference_id"] = c.user
		if c.edit != nil {
			c.edit(s)
		}
		raw, _ := json.Marshal(s)
		var res Result
		_, _, err := l.s.StripeEvent(t.Context(), usagelog.StripeEventInfo{ID: "evt_" + c.session, Type: "checkout.session.completed"},
			func(tx *usagelog.PaymentTx) (string, error) {
				var err error
				res, err = Apply(tx, Event{ID: "evt_" + c.session, Type: "checkout.session.completed", Object: raw}, Config{Currency: "USD"})
				return res.Outcome, err
			})
		if err != nil {
			t.Fatal(err)
		}
		ref := "topup:" + c.session
		if c.reason == ReasonUserMismatch {
			ref = "topup:tu_m"
		}
		if res.Outcome != OutcomeUnapplied || res.Reason != c.reason || res.Payment != ref {
			t.Errorf("%s: %+v", c.session, res)
		}
		p := l.payments()[ref]
		if p.Status != StatusUnapplied || p.Credited != 0 || p.AmountMinor != 2000 {
			t.Errorf("%s: payment %+v", c.session, p)
		}
		// The async event of the same session, and a refund of its charge.
		l.want(OutcomeAlreadyUnapplied, l.send("checkout.session.async_payment_succeeded", s), 0)
		l.want(OutcomeNothingToTakeBack, l.send("charge.refunded", chargeObj("ch_"+c.session, "pi_"+c.session, 2000, 2000)), 0)
	}
	for _, u := range []string{l.user, erased.ID} {
		if b, err := l.s.LedgerBalance(t.Context(), u); err != nil || b != 0 {
			t.Errorf("ledger balance of %q: %s, %v", u, b, err)
		}
	}
	for _, u := range []string{"u_never", ""} {
		if _, err := l.s.LedgerBalance(t.Context(), u); !errors.Is(err, usagelog.ErrNotFound) {
			t.Errorf("ledger of %q: %v, want not found", u, err)
		}
	}
}

// The refunds of a payment's several charges are each measured against the
// whole payment and added up: each refunded cent is debited once, however
// the events are redelivered or reordered, and never more than the credit.
func TestRefundsAcrossCharges(t *testing.T) {
	l := newLedger(t, "USD")
	l.want(OutcomeCredited, l.send("checkout.session.completed", l.session("cs_1", "paid", 2000, "usd")), 20*unit)
	// Two charges of 10.00 pay the 20.00 payment.
	a500 := chargeObj("ch_a", "pi_cs_1", 1000, 500)
	l.want(OutcomeRefundDebited, l.sendID("evt_a500", "charge.refunded", a500), 15*unit)
	l.want(OutcomeRefundDebited, l.sendID("evt_b300", "charge.refunded", chargeObj("ch_b", "pi_cs_1", 1000, 300)), 12*unit)
	// Redeliveries, and other events with the same totals.
	l.want("dup", l.sendID("evt_a500", "charge.refunded", a500), 12*unit)
	l.want(OutcomeRefundStale, l.send("charge.refunded", a500), 12*unit)
	l.want(OutcomeRefundStale, l.send("charge.refunded", chargeObj("ch_b", "pi_cs_1", 1000, 300)), 12*unit)
	l.want(OutcomeRefundDebited, l.send("charge.refunded", chargeObj("ch_b", "pi_cs_1", 1000, 1000)), 5*unit)
	l.want(OutcomeRefundDebited, l.send("charge.refunded", chargeObj("ch_a", "pi_cs_1", 1000, 1000)), 0)
	l.want(OutcomeRefundStale, l.send("charge.refunded", chargeObj("ch_b", "pi_cs_1", 1000, 1000)), 0)

	// Two charges each the payment's full amount, both fully refunded
	// (before and after the credit): the credit is taken back once.
	l.want(OutcomeCredited, l.send("checkout.session.completed", l.session("cs_2", "paid", 1000, "usd")), 10*unit)
	l.want(OutcomeRefundDebited, l.send("charge.refunded", chargeObj("ch_c", "pi_cs_2", 1000, 400)), 6*unit)
	l.want(OutcomeRefundDebited, l.send("charge.refunded", chargeObj("ch_d", "pi_cs_2", 1000, 1000)), 0)
	l.want(OutcomeNothingToTakeBack, l.send("charge.refunded", chargeObj("ch_c", "pi_cs_2", 1000, 1000)), 0)

	l.want(OutcomeRefundWaiting, l.send("charge.refunded", chargeObj("ch_e", "pi_cs_3", 1000, 1000)), 0)
	l.want(OutcomeRefundWaiting, l.send("charge.refunded", chargeObj("ch_f", "pi_cs_3", 1000, 250)), 0)
	l.want(OutcomeCredited, l.send("checkout.session.completed", l.session("cs_3", "paid", 2000, "usd")), 7500*unit/1000)
	l.want(OutcomeRefundDebited, l.send("charge.refunded", chargeObj("ch_f", "pi_cs_3", 1000, 1000)), 0)

	ps := l.payments()
	var debited money.Nanos
	for _, p := range ps {
		if p.Kind == usagelog.PaymentRefund {
			debited += p.Credited
		}
	}
	if debited != -50*unit {
		t.Fatalf("refund records add up to %s, want -50.00 (the three credits)", debited)
	}
}

// A payment a balance cannot hold (past money.MaxNanos, about 9 million
// units) is unapplied, not credited: the ledger would hold a credit that
// Redis refuses.
func TestUnappliedAmountRange(t *testing.T) {
	l := newLedger(t, "JPY")
	l.want(OutcomeCredited, l.send("checkout.session.completed", l.session("cs_1", "paid", 9_000_000, "jpy")), 9_000_000*unit)
	l.want(OutcomeUnapplied, l.send("checkout.session.completed", l.session("cs_2", "paid", 10_000, "jpy")), 9_000_000*unit)
	l.want(OutcomeUnapplied, l.send("checkout.session.completed", l.session("cs_3", "paid", 1<<62, "jpy")), 9_000_000*unit)
	ps := l.payments()
	for _, ref := range []string{"topup:cs_2", "topup:cs_3"} {
		if p := ps[ref]; p.Status != StatusUnapplied || p.Credited != 0 {
			t.Errorf("%s: %+v", ref, p)
		}
	}
	// Refunds still debit what was credited.
	l.want(OutcomeRefundDebited, l.send("charge.refunded", obj{"id": "ch_1", "amount": 9_000_000, "amount_refunded": 1_000_000,
		"currency": "jpy", "payment_intent": "pi_cs_1"}), 8_000_000*unit)
}
