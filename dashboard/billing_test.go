package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// The Stripe secrets of the test config; Caddy reads them from the
// environment.
const (
	testStripeKey     = "sk_test_4eC39HqLyjWDarjtT1zdp7dcAitoken"
	testWebhookSecret = "whsec_aitoken_dashboard_test"
)

// sendWebhook posts a Stripe event signed with the webhook secret and
// returns the status and the answer's outcome.
func sendWebhook(t *testing.T, typ string, object map[string]any) (int, string) {
	t.Helper()
	payload, _ := json.Marshal(map[string]any{
		"id": fmt.Sprintf("evt_dash_%d", time.Now().UnixNano()), "object": "event", "api_version": stripe.APIVersion,
		"created": time.Now().Unix(), "livemode": false, "pending_webhooks": 1, "type": typ,
		"request": map[string]any{"id": nil, "idempotency_key": nil},
		"data":    map[string]any{"object": object},
	})
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: testWebhookSecret})
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://localhost:%d/stripe/webhook", env.http), bytes.NewReader(sp.Payload))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", sp.Header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct {
		Outcome string `json:"outcome"`
	}
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out.Outcome
}

func userPayments(t *testing.T, user string) []usagelog.Payment {
	t.Helper()
	ps, err := openLedger(t).PaymentsPage(context.Background(), usagelog.PaymentQuery{User: user})
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestBillingTopupThroughCheckoutAndWebhook(t *testing.T) {
	if env.stripeErr != nil {
		t.Fatalf("this test needs stripe-mock: %v", env.stripeErr)
	}
	email, alice := signUp(t)
	_, bob := signUp(t)
	user := userOf(t, email)

	resp, body := alice.do("GET", "/billing", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="amount" value="20.00"`) || !strings.Contains(body, "No payments yet.") {
		t.Fatalf("billing page: %d %s", resp.StatusCode, body)
	}
	for amount, want := range map[string]string{"4.99": "at least 5.00 USD", "500.01": "at most 500.00 USD",
		"twenty": "Enter an amount", "20.001": "Enter an amount", "-20": "at least 5.00 USD"} {
		resp, body := alice.do("POST", "/billing/topup", url.Values{"amount": {amount}})
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, want) {
			t.Errorf("amount %s: %d, want 400 saying %q", amount, resp.StatusCode, want)
		}
	}
	if ps := userPayments(t, user); len(ps) != 0 {
		t.Fatalf("refused amounts left payments: %+v", ps)
	}

	resp, _ = alice.do("POST", "/billing/topup", url.Values{"amount": {"20.00"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") == "" {
		t.Fatalf("top-up: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	ps := userPayments(t, user)
	if len(ps) != 1 || ps[0].Status != "open" || ps[0].AmountMinor != 2000 || !strings.HasPrefix(ps[0].SessionID, "cs_") {
		t.Fatalf("top-up record: %+v", ps)
	}
	p := ps[0]

	// Stripe says the session is paid: the webhook credits the balance.
	obj := map[string]any{"id": p.SessionID, "object": "checkout.session", "mode": "payment", "client_reference_id": user,
		"payment_status": "paid", "status": "complete", "amount_total": 2000, "currency": "usd",
		"payment_intent": "pi_" + p.SessionID, "metadata": map[string]any{"user": user, "topup_id": p.TopupID}}
	if st, outcome := sendWebhook(t, "checkout.session.completed", obj); st != 200 || outcome != "credited" {
		t.Fatalf("webhook: %d %q", st, outcome)
	}
	_, body = alice.do("GET", "/billing", nil)
	if !strings.Contains(body, "20.00 USD") || !strings.Contains(body, "<td>paid</td>") {
		t.Fatalf("billing page after payment: %s", body)
	}
	if _, body := alice.do("GET", "/", nil); !strings.Contains(body, "20.00 USD") {
		t.Fatal("the overview does not show the credit")
	}

	// Bob cannot page from Alice's payment, nor see it.
	id := strconv.FormatInt(p.ID, 10)
	if resp, _ := bob.do("GET", "/billing?before="+id, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("bob paging from alice's payment: %d", resp.StatusCode)
	}
	if _, body := bob.do("GET", "/billing", nil); strings.Contains(body, "<td>paid</td>") {
		t.Fatal("bob sees alice's payment")
	}
	if resp, _ := alice.do("GET", "/billing?before="+id, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("alice paging from her payment: %d", resp.StatusCode)
	}

	// topup_rate 3 1h: two more, then refused.
	for i := range 3 {
		resp, _ := alice.do("POST", "/billing/topup", url.Values{"amount": {"10.00"}})
		if want := []int{303, 303, 429}[i]; resp.StatusCode != want {
			t.Fatalf("top-up %d: %d, want %d", i+2, resp.StatusCode, want)
		}
	}
}

func TestBillingWithoutStripe(t *testing.T) {
	_, c := signUp(t)
	startCaddyWith(t, setup{noStripe: true})
	resp, body := c.do("GET", "/billing", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "Top-ups are not available") || strings.Contains(body, `id="amount"`) {
		t.Fatalf("billing without stripe: %d %s", resp.StatusCode, body)
	}
	if resp, _ := c.do("POST", "/billing/topup", url.Values{"amount": {"20.00"}}); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("top-up without stripe: %d", resp.StatusCode)
	}
}
