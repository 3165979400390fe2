package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"
)

const webhookURL = gatewayURL + "/stripe/webhook"

var eventSeq atomic.Int64

// stripeEvent is the JSON of a Stripe event carrying object, rendered at
// apiVersion ("" for stripe-go's own).
func stripeEvent(id, typ, apiVersion string, object map[string]any) []byte {
	if id == "" {
		id = fmt.Sprintf("evt_test_%d_%d", time.Now().UnixNano(), eventSeq.Add(1))
	}
	if apiVersion == "" {
		apiVersion = stripe.APIVersion
	}
	b, _ := json.Marshal(map[string]any{
		"id": id, "object": "event", "api_version": apiVersion, "created": time.Now().Unix(),
		"livemode": false, "pending_webhooks": 1, "type": typ,
		"request": map[string]any{"id": nil, "idempotency_key": nil},
		"data":    map[string]any{"object": object},
	})
	return b
}

// sendEvent posts payload signed with secret at time ts (zero: now) and
// returns the status and the decoded answer.
func sendEvent(t *testing.T, payload []byte, secret string, ts time.Time) (int, map[string]any) {
	t.Helper()
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: ts})
	req, _ := http.NewRequest(http.MethodPost, webhookURL, bytes.NewReader(sp.Payload))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", sp.Header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

// deliver sends a validly signed event and wants 200 with the outcome.
func deliver(t *testing.T, payload []byte, outcome string) {
	t.Helper()
	st, out := sendEvent(t, payload, testWebhookSecret, time.Time{})
	if st != http.StatusOK {
		t.Fatalf("event: %d %v", st, out)
	}
	if outcome != "" && out["outcome"] != outcome {
		t.Fatalf("event outcome %v, want %s (%v)", out["outcome"], outcome, out)
	}
}

func sessionObject(id, user, status string, amount int64, cur string) map[string]any {
	return map[string]any{"id": id, "object": "checkout.session", "mode": "payment", "client_reference_id": user,
		"payment_status": status, "status": "complete", "amount_total": amount, "currency": cur,
		"payment_intent": "pi_" + id, "metadata": map[string]any{}}
}

func chargeObject(id, pi string, amount, refunded int64) map[string]any {
	return map[string]any{"id": id, "object": "charge", "amount": amount, "amount_refunded": refunded,
		"currency": "usd", "payment_intent": pi, "refunded": refunded == amount, "metadata": map[string]any{}}
}

func disputeObject(id, charge, pi, status string, amount int64) map[string]any {
	return map[string]any{"id": id, "object": "dispute", "amount": amount, "currency": "usd", "status": status,
		"charge": charge, "payment_intent": pi}
}

func uniq(prefix string) string {
	return fmt.Sprintf("%s_%d_%d", prefix, time.Now().UnixNano(), eventSeq.Add(1))
}

func wantBalance(t *testing.T, user, want string) {
	t.Helper()
	if got := getUser(t, user).Balance; got != want {
		t.Fatalf("balance %s, want %s", got, want)
	}
}

type paymentResp struct {
	Ref         string `json:"ref"`
	Kind        string `json:"kind"`
	User        string `json:"user"`
	TopupID     string `json:"topup_id"`
	SessionID   string `json:"session_id"`
	ChargeID    string `json:"charge_id"`
	AmountMinor int64  `json:"amount_minor"`
	Amount      string `json:"amount"`
	Currency    string `json:"currency"`
	Credited    string `json:"credited"`
	Status      string `json:"status"`
}

func payments(t *testing.T, user string) map[string]paymentResp {
	t.Helper()
	var out struct {
		Payments []paymentResp `json:"payments"`
	}
	if st := admin(t, "GET", "/aitoken/payments?user="+user, "", &out); st != http.StatusOK {
		t.Fatalf("payments: %d", st)
	}
	m := map[string]paymentResp{}
	for _, p := range out.Payments {
		m[p.Ref] = p
	}
	return m
}

// One session credits once: three deliveries of its event, and the
// async_payment_succeeded event for the same session.
func TestStripeCreditOnce(t *testing.T) {
	gateway(t)
	u, _ := newAccount(t, "", "")
	cs := uniq("cs")
	ev := stripeEvent("", "checkout.session.completed", "", sessionObject(cs, u.ID, "paid", 2000, "usd"))
	deliver(t, ev, "credited")
	for range 2 {
		st, out := sendEvent(t, ev, testWebhookSecret, time.Time{})
		if st != http.StatusOK || out["duplicate"] != true {
			t.Fatalf("redelivery: %d %v", st, out)
		}
	}
	wantBalance(t, u.ID, "20.000000000")
	deliver(t, stripeEvent("", "checkout.session.async_payment_succeeded", "", sessionObject(cs, u.ID, "paid", 2000, "usd")),
		"already_credited")
	wantBalance(t, u.ID, "20.000000000")
	p := payments(t, u.ID)["topup:"+cs]
	if p.Kind != "topup" || p.Status != "paid" || p.Credited != "20.000000000" || p.Amount != "20.00" || p.Currency != "USD" {
		t.Fatalf("payment %+v", p)
	}
}

// Events rendered at a newer API version than stripe-go's are processed.
func TestStripeNewerAPIVersion(t *testing.T) {
	gateway(t)
	u, _ := newAccount(t, "", "")
	obj := sessionObject(uniq("cs"), u.ID, "paid", 1250, "usd")
	obj["ui_mode"], obj["permissions"] = "hosted", nil // fields v76 does not know
	deliver(t, stripeEvent("", "checkout.session.completed", "2025-09-30.clover", obj), "credited")
	wantBalance(t, u.ID, "12.500000000")
}

// A bad or old signature gets 400 and changes nothing: the same event,
// signed properly, is then applied. Other methods get 405; a body over
// 1 MiB gets 413.
func TestStripeSignatureRefused(t *testing.T) {
	gateway(t)
	u, _ := newAccount(t, "", "")
	ev := stripeEvent("", "checkout.session.completed", "", sessionObject(uniq("cs"), u.ID, "paid", 2000, "usd"))
	for name, send := range map[string]func() (int, map[string]any){
		"wrong secret": func() (int, map[string]any) { return sendEvent(t, ev, "whsec_wrong", time.Time{}) },
		"one hour old": func() (int, map[string]any) {
			return sendEvent(t, ev, testWebhookSecret, time.Now().Add(-time.Hour))
		},
		"changed body": func() (int, map[string]any) {
			sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: ev, Secret: testWebhookSecret})
			changed := bytes.Replace(sp.Payload, []byte(`"amount_total":2000`), []byte(`"amount_total":9000`), 1)
			return post2(t, changed, sp.Header)
		},
		"unsigned": func() (int, map[string]any) { return post2(t, ev, "") },
	} {
		if st, out := send(); st != http.StatusBadRequest {
			t.Errorf("%s: %d %v, want 400", name, st, out)
		}
	}
	wantBalance(t, u.ID, "0.000000000")
	if len(payments(t, u.ID)) != 0 {
		t.Fatal("a refused event left a payment")
	}
	deliver(t, ev, "credited")
	wantBalance(t, u.ID, "20.000000000")

	resp, err := http.Get(webhookURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET: %d allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	big := append(stripeEvent("", "ping", "", map[string]any{"id": "x", "pad": strings.Repeat("a", 1<<20)}), ' ')
	if st, _ := sendEvent(t, big, testWebhookSecret, time.Time{}); st != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized event: %d", st)
	}
	// Unknown event types are acknowledged and ignored.
	deliver(t, stripeEvent("", "customer.created", "", map[string]any{"id": "cus_1", "object": "customer"}), "ignored")
}

func post2(t *testing.T, body []byte, sig string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, webhookURL, bytes.NewReader(body))
	if sig != "" {
		req.Header.Set("Stripe-Signature", sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// Partial refunds debit the newly refunded part of the cumulative amount;
// an older event delivered late never credits anything back.
func TestStripePartialRefunds(t *testing.T) {
	gateway(t)
	u, _ := newAccount(t, "", "")
	cs, ch := uniq("cs"), uniq("ch")
	deliver(t, stripeEvent("", "checkout.session.completed", "", sessionObject(cs, u.ID, "paid", 2000, "usd")), "credited")
	older := stripeEvent("", "charge.refunded", "", chargeObject(ch, "pi_"+cs, 2000, 500))
	deliver(t, older, "refund_debited")
	wantBalance(t, u.ID, "15.000000000")
	deliver(t, stripeEvent("", "charge.refunded", "", chargeObject(ch, "pi_"+cs, 2000, 800)), "refund_debited")
	wantBalance(t, u.ID, "12.000000000")
	// Stripe's retry of the older event, and another event with its total.
	if st, out := sendEvent(t, older, testWebhookSecret, time.Time{}); st != http.StatusOK || out["duplicate"] != true {
		t.Fatalf("redelivery: %d %v", st, out)
	}
	deliver(t, stripeEvent("", "charge.refunded", "", chargeObject(ch, "pi_"+cs, 2000, 500)), "refund_stale")
	wantBalance(t, u.ID, "12.000000000")
	ps := payments(t, u.ID)
	if p := ps["refund:"+ch+":500"]; p.Credited != "-5.000000000" || p.Amount != "5.00" || p.Kind != "refund" {
		t.Errorf("first refund %+v", p)
	}
	if p := ps["refund:"+ch+":800"]; p.Credited != "-3.000000000" || p.Amount != "3.00" {
		t.Errorf("second refund %+v", p)
	}
}

// A lost dispute keeps its debit; a won one gives it back.
func TestStripeDisputes(t *testing.T) {
	gateway(t)
	u, _ := newAccount(t, "", "")
	lostCS, wonCS := uniq("cs"), uniq("cs")
	deliver(t, stripeEvent("", "checkout.session.completed", "", sessionObject(lostCS, u.ID, "paid", 1000, "usd")), "credited")
	deliver(t, stripeEvent("", "checkout.session.completed", "", sessionObject(wonCS, u.ID, "paid", 2000, "usd")), "credited")
	wantBalance(t, u.ID, "30.000000000")

	lost := uniq("dp")
	deliver(t, stripeEvent("", "charge.dispute.created", "", disputeObject(lost, "ch_"+lostCS, "pi_"+lostCS, "needs_response", 1000)), "dispute_held")
	wantBalance(t, u.ID, "20.000000000")
	deliver(t, stripeEvent("", "charge.dispute.closed", "", disputeObject(lost, "ch_"+lostCS, "pi_"+lostCS, "lost", 1000)), "dispute_lost")
	wantBalance(t, u.ID, "20.000000000")

	won := uniq("dp")
	deliver(t, stripeEvent("", "charge.dispute.created", "", disputeObject(won, "ch_"+wonCS, "pi_"+wonCS, "needs_response", 2000)), "dispute_held")
	wantBalance(t, u.ID, "0.000000000")
	deliver(t, stripeEvent("", "charge.dispute.closed", "", disputeObject(won, "ch_"+wonCS, "pi_"+wonCS, "won", 2000)), "dispute_released")
	wantBalance(t, u.ID, "20.000000000")

	ps := payments(t, u.ID)
	if p := ps["dispute:"+lost]; p.Status != "lost" || p.Credited != "-10.000000000" {
		t.Errorf("lost dispute %+v", p)
	}
	if p := ps["dispute:"+won]; p.Status != "won" || p.Credited != "0.000000000" {
		t.Errorf("won dispute %+v", p)
	}
}

// A payment in another currency is recorded and not credited; an unpaid
// session is pending until its async payment succeeds.
func TestStripeNotCredited(t *testing.T) {
	gateway(t)
	u, _ := newAccount(t, "", "")
	eur := uniq("cs")
	deliver(t, stripeEvent("", "checkout.session.completed", "", sessionObject(eur, u.ID, "paid", 2000, "eur")), "currency_mismatch")
	wantBalance(t, u.ID, "0.000000000")
	if p := payments(t, u.ID)["topup:"+eur]; p.Status != "currency_mismatch" || p.Currency != "EUR" || p.AmountMinor != 2000 || p.Credited != "0.000000000" {
		t.Fatalf("payment %+v", p)
	}

	async := uniq("cs")
	deliver(t, stripeEvent("", "checkout.session.completed", "", sessionObject(async, u.ID, "unpaid", 700, "usd")), "pending")
	wantBalance(t, u.ID, "0.000000000")
	if p := payments(t, u.ID)["topup:"+async]; p.Status != "pending" {
		t.Fatalf("payment %+v", p)
	}
	deliver(t, stripeEvent("", "checkout.session.async_payment_succeeded", "", sessionObject(async, u.ID, "paid", 700, "usd")), "credited")
	wantBalance(t, u.ID, "7.000000000")
}

// The secrets of the stripe block never appear in Caddy's config.
func TestStripeSecretsNotInConfig(t *testing.T) {
	gateway(t)
	resp, err := http.Get(adminURL + "/config/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !bytes.Contains(b, []byte("aitoken_stripe")) {
		t.Fatal("config has no aitoken_stripe handler")
	}
	for _, s := range []string{testStripeKey, testWebhookSecret} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("GET /config/ shows a secret")
		}
	}
}

// The refunds of two charges of one payment, each partly refunded, with
// every event delivered twice and other events repeating their totals:
// the ledger debits exactly the refunded parts, once, each measured
// against the whole payment.
func TestStripeRefundsAcrossCharges(t *testing.T) {
	gateway(t)
	u, _ := newAccount(t, "", "")
	cs, a, b := uniq("cs"), uniq("ch"), uniq("ch")
	deliver(t, stripeEvent("", "checkout.session.completed", "", sessionObject(cs, u.ID, "paid", 2000, "usd")), "credited")
	// Two charges of 10.00 paid the 20.00.
	for _, ev := range [][]byte{
		stripeEvent("", "charge.refunded", "", chargeObject(a, "pi_"+cs, 1000, 500)),
		stripeEvent("", "charge.refunded", "", chargeObject(b, "pi_"+cs, 1000, 300)),
	} {
		deliver(t, ev, "refund_debited")
		if st, out := sendEvent(t, ev, testWebhookSecret, time.Time{}); st != http.StatusOK || out["duplicate"] != true {
			t.Fatalf("redelivery: %d %v", st, out)
		}
	}
	deliver(t, stripeEvent("", "charge.refunded", "", chargeObject(a, "pi_"+cs, 1000, 500)), "refund_stale")
	deliver(t, stripeEvent("", "charge.refunded", "", chargeObject(b, "pi_"+cs, 1000, 300)), "refund_stale")
	wantBalance(t, u.ID, "12.000000000")
	ps := payments(t, u.ID)
	if p := ps["refund:"+a+":500"]; p.Credited != "-5.000000000" || p.ChargeID != a {
		t.Errorf("refund of %s: %+v", a, p)
	}
	if p := ps["refund:"+b+":300"]; p.Credited != "-3.000000000" || p.ChargeID != b {
		t.Errorf("refund of %s: %+v", b, p)
	}
	if len(ps) != 3 {
		t.Errorf("payments %+v", ps)
	}
}
