package caddymodule_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// accountCall calls the account API with key and decodes the answer.
func accountCall(t *testing.T, method, path, key, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, gatewayURL+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: %d, body not JSON: %v", method, path, resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

// openAIErr returns the code and param of an OpenAI-shaped error.
func openAIErr(out map[string]any) (code, param string) {
	e, _ := out["error"].(map[string]any)
	code, _ = e["code"].(string)
	param, _ = e["param"].(string)
	return code, param
}

func TestAccountBalance(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "3.25", "")
	st, out := accountCall(t, "GET", "/v1/account", k.Key, "")
	if st != http.StatusOK || out["balance"] != "3.250000000" || out["held"] != "0.000000000" || out["currency"] != "USD" || out["user"] != u.ID {
		t.Fatalf("GET /v1/account: %d %v", st, out)
	}
	// x-api-key works too.
	req, _ := http.NewRequest("GET", gatewayURL+"/v1/account", nil)
	req.Header.Set("x-api-key", k.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("x-api-key: %d", resp.StatusCode)
	}
	for _, c := range []struct {
		key    string
		status int
		code   string
	}{{"", 401, "missing_api_key"}, {"sk-ait-not-a-key", 401, "invalid_api_key"}} {
		st, out := accountCall(t, "GET", "/v1/account", c.key, "")
		if code, _ := openAIErr(out); st != c.status || code != c.code {
			t.Errorf("key %q: %d %v", c.key, st, out)
		}
	}
	if st, out := accountCall(t, "POST", "/v1/account", k.Key, "{}"); st != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/account: %d %v", st, out)
	}
	if st, out := accountCall(t, "GET", "/v1/account/nothing-here", k.Key, ""); st != http.StatusNotFound {
		t.Errorf("unknown account path: %d %v", st, out)
	}
}

// A top-up creates a Checkout Session at stripe-mock and records it; the
// webhook for that session then credits the user once.
func TestAccountTopup(t *testing.T) {
	if stripeEnv.err != nil {
		t.Fatalf("this test needs stripe-mock: %v", stripeEnv.err)
	}
	gateway(t)
	u, k := newAccount(t, "", "")

	for _, c := range []struct {
		body string
		want int
	}{
		{`{"amount":"4.99"}`, 400},
		{`{"amount":"20.001"}`, 400},
		{`{"amount":"-20.00"}`, 400},
		{`{"amount":"twenty"}`, 400},
		{`{}`, 400},
	} {
		st, out := accountCall(t, "POST", "/v1/account/topup", k.Key, c.body)
		if code, param := openAIErr(out); st != c.want || param != "amount" || code == "" {
			t.Errorf("%s: %d %v", c.body, st, out)
		}
	}
	if st, out := accountCall(t, "POST", "/v1/account/topup", "", `{"amount":"20.00"}`); st != http.StatusUnauthorized {
		t.Errorf("no key: %d %v", st, out)
	}
	if st, out := accountCall(t, "GET", "/v1/account/topup", k.Key, ""); st != http.StatusMethodNotAllowed {
		t.Errorf("GET topup: %d %v", st, out)
	}

	st, out := accountCall(t, "POST", "/v1/account/topup", k.Key, `{"amount":"20.00"}`)
	if st != http.StatusOK {
		t.Fatalf("top-up: %d %v", st, out)
	}
	url, _ := out["checkout_url"].(string)
	id, _ := out["id"].(string)
	topupID, _ := out["topup_id"].(string)
	if url == "" || !strings.HasPrefix(id, "cs_") || !strings.HasPrefix(topupID, "tu_") || out["amount"] != "20.000000000" {
		t.Fatalf("top-up answer %v", out)
	}
	p := payments(t, u.ID)["topup:"+topupID]
	if p.Status != "open" || p.SessionID != id || p.AmountMinor != 2000 || p.Currency != "USD" || p.User != u.ID {
		t.Fatalf("top-up record %+v", p)
	}
	wantBalance(t, u.ID, "0.000000000")

	// Stripe reports the session paid (stripe-mock sends no webhooks).
	obj := sessionObject(id, u.ID, "paid", 2000, "usd")
	obj["metadata"] = map[string]any{"user": u.ID, "topup_id": topupID}
	deliver(t, stripeEvent("", "checkout.session.completed", "", obj), "credited")
	deliver(t, stripeEvent("", "checkout.session.async_payment_succeeded", "", obj), "already_credited")
	wantBalance(t, u.ID, "20.000000000")
	ps := payments(t, u.ID)
	if p := ps["topup:"+topupID]; p.Status != "paid" || p.Credited != "20.000000000" || len(ps) != 1 {
		t.Fatalf("payments after the webhook %+v", ps)
	}
	st, out = accountCall(t, "GET", "/v1/account", k.Key, "")
	if st != http.StatusOK || out["balance"] != "20.000000000" {
		t.Fatalf("balance after top-up: %d %v", st, out)
	}
}

// A top-up above max_topup (500.00 in the test config), or in another
// currency, is refused naming the field; each key may start 3 top-ups an
// hour (topup_rate 3 1h), then gets 429 with Retry-After, while another
// key of the same user still may.
func TestAccountTopupLimits(t *testing.T) {
	if stripeEnv.err != nil {
		t.Fatalf("this test needs stripe-mock: %v", stripeEnv.err)
	}
	gateway(t)
	u, k := newAccount(t, "", "")
	for _, c := range []struct{ body, param string }{
		{`{"amount":"500.01"}`, "amount"},
		{`{"amount":"9223372035"}`, "amount"},
		{`{"amount":9223372035.5}`, "amount"},
		{`{"amount":"20.00","currency":"eur"}`, "currency"},
	} {
		st, out := accountCall(t, "POST", "/v1/account/topup", k.Key, c.body)
		if code, param := openAIErr(out); st != http.StatusBadRequest || param != c.param || code != "invalid_request_error" {
			t.Errorf("%s: %d %v", c.body, st, out)
		}
	}
	for _, body := range []string{`{"amount":"500.00"}`, `{"amount":"20.00","currency":"usd"}`, `{"amount":"5"}`} {
		if st, out := accountCall(t, "POST", "/v1/account/topup", k.Key, body); st != http.StatusOK {
			t.Fatalf("%s: %d %v", body, st, out)
		}
	}
	req, _ := http.NewRequest("POST", gatewayURL+"/v1/account/topup", strings.NewReader(`{"amount":"20.00"}`))
	req.Header.Set("Authorization", "Bearer "+k.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if code, _ := openAIErr(out); resp.StatusCode != http.StatusTooManyRequests || code != "rate_limit_exceeded" || ra < 3000 || ra > 3600 {
		t.Fatalf("fourth top-up: %d Retry-After %q %v", resp.StatusCode, resp.Header.Get("Retry-After"), out)
	}
	if n := len(payments(t, u.ID)); n != 3 {
		t.Fatalf("%d top-ups recorded, want 3", n)
	}
	var k2 keyResp
	if st := admin(t, "POST", "/aitoken/keys", `{"user":"`+u.ID+`"}`, &k2); st != http.StatusCreated {
		t.Fatalf("second key: %d", st)
	}
	if st, out := accountCall(t, "POST", "/v1/account/topup", k2.Key, `{"amount":"20.00"}`); st != http.StatusOK {
		t.Fatalf("another key's top-up: %d %v", st, out)
	}
}
