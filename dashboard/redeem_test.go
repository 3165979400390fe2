package dashboard_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// mintCodes mints n codes of amount through the admin API and returns
// their secrets.
func mintCodes(t *testing.T, amount string, n int) []string {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://localhost:%d/aitoken/codes", env.adminPort), "application/json",
		strings.NewReader(fmt.Sprintf(`{"amount":%q,"count":%d}`, amount, n)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct {
		Codes []struct {
			Code string `json:"code"`
		} `json:"codes"`
	}
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &out) != nil || len(out.Codes) != n {
		t.Fatalf("mint: %d %s", resp.StatusCode, b)
	}
	var secrets []string
	for _, c := range out.Codes {
		secrets = append(secrets, c.Code)
	}
	return secrets
}

// The billing page's form redeems a code once into the balance; a second
// try, an unknown code and a cross-site post are refused, and after ten
// failed tries even a good code waits.
func TestBillingRedeemCode(t *testing.T) {
	email, alice := signUp(t)
	user := userOf(t, email)
	codes := mintCodes(t, "7.50", 2)

	resp, body := alice.do("GET", "/billing", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `action="/dashboard/billing/redeem"`) || !strings.Contains(body, "Redeem a code") {
		t.Fatalf("billing page: %d %s", resp.StatusCode, body)
	}
	if resp, _ := alice.do("POST", "/billing/redeem", url.Values{"code": {codes[0]}},
		"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site redeem: %d", resp.StatusCode)
	}
	resp, body = alice.do("POST", "/billing/redeem", url.Values{"code": {" " + codes[0] + " "}}, "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Code redeemed: 7.50 USD added to your balance.") {
		t.Fatalf("redeem: %d %s", resp.StatusCode, body)
	}
	if bal, err := openLedger(t).LedgerBalance(t.Context(), user); err != nil || bal.String() != "7.500000000" {
		t.Fatalf("ledger balance %s %v", bal, err)
	}
	resp, body = alice.do("POST", "/billing/redeem", url.Values{"code": {codes[0]}})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "already been redeemed") {
		t.Fatalf("second redeem: %d %s", resp.StatusCode, body)
	}
	if resp, body := alice.do("POST", "/billing/redeem", url.Values{"code": {""}}); resp.StatusCode != http.StatusBadRequest ||
		!strings.Contains(body, "Enter the code.") {
		t.Fatalf("empty code: %d %s", resp.StatusCode, body)
	}
	for i := range 9 { // the second redeem was the first failure
		resp, body := alice.do("POST", "/billing/redeem", url.Values{"code": {"aitc-guess" + fmt.Sprint(i)}})
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "This code is not valid.") {
			t.Fatalf("guess %d: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, body = alice.do("POST", "/billing/redeem", url.Values{"code": {codes[1]}})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "Too many codes tried") {
		t.Fatalf("after ten failures: %d %s", resp.StatusCode, body)
	}
	if bal, _ := openLedger(t).LedgerBalance(t.Context(), user); bal.String() != "7.500000000" {
		t.Fatalf("a throttled redeem credited: %s", bal)
	}
	// Another customer is not throttled, and redeems the second code.
	_, bob := signUp(t)
	if resp, body := bob.do("POST", "/billing/redeem", url.Values{"code": {codes[1]}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("bob: %d %s", resp.StatusCode, body)
	}
	if _, body := bob.do("GET", "/billing?lang=zh-Hans", nil); !strings.Contains(body, "兑换充值码") {
		t.Fatal("the form is not translated")
	}
}
