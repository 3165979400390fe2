package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestAccountUsage(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	ou, other := newAccount(t, "1.00", "")
	for _, deltas := range []string{"1", "2", "3"} {
		if resp, body := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model"}`, "X-Mock-Deltas", deltas); resp.StatusCode != 200 {
			t.Fatalf("chat: %d %s", resp.StatusCode, body)
		}
	}
	resp, _ := post(t, "/v1/chat/completions", other.Key, `{"model":"test-model"}`)
	if resp.StatusCode != 200 {
		t.Fatal("other account's chat failed")
	}
	otherRequest := resp.Header.Get("X-Request-Id")
	waitUsage(t, u.ID, 3)
	waitUsage(t, ou.ID, 1)

	type page struct {
		Object  string        `json:"object"`
		Records []usageRecord `json:"records"`
		HasMore bool          `json:"has_more"`
	}
	get := func(query string) (int, page, map[string]any) {
		t.Helper()
		st, raw := accountCall(t, "GET", "/v1/account/usage"+query, k.Key, "")
		var p page
		b, _ := json.Marshal(raw)
		_ = json.Unmarshal(b, &p)
		return st, p, raw
	}
	st, all, raw := get("")
	if st != 200 || all.Object != "list" || len(all.Records) != 3 || all.HasMore {
		t.Fatalf("usage: %d %v", st, raw)
	}
	for i, want := range []int64{3, 2, 1} { // newest first
		if r := all.Records[i]; r.OutputTokens != want || r.KeyID != k.ID {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	st, p1, _ := get("?limit=2")
	if st != 200 || len(p1.Records) != 2 || !p1.HasMore || p1.Records[0].RequestID != all.Records[0].RequestID {
		t.Fatalf("first page: %d %+v", st, p1)
	}
	st, p2, _ := get("?limit=2&before=" + p1.Records[1].RequestID)
	if st != 200 || len(p2.Records) != 1 || p2.HasMore || p2.Records[0].RequestID != all.Records[2].RequestID {
		t.Fatalf("second page: %d %+v", st, p2)
	}
	future := time.Now().Add(time.Hour)
	if st, p, _ := get("?from=" + future.UTC().Format(time.RFC3339)); st != 200 || len(p.Records) != 0 {
		t.Fatalf("from the future: %d %+v", st, p)
	}
	if st, p, _ := get(fmt.Sprintf("?from=%d&to=%d", time.Now().Add(-time.Hour).Unix(), future.Unix())); st != 200 || len(p.Records) != 3 {
		t.Fatalf("Unix-second bounds: %d %+v", st, p)
	}
	if st, p, _ := get("?model=other-model"); st != 200 || len(p.Records) != 0 {
		t.Fatalf("model filter: %d %+v", st, p)
	}
	for _, q := range []struct{ query, param string }{
		{"?from=yesterday", "from"}, {"?to=2026-02-30", "to"}, {"?limit=0", "limit"}, {"?limit=1001", "limit"}, {"?before=req_nope", "before"},
		// Another customer's request ID is no cursor here: it is refused
		// as an unknown one, telling nothing of that request.
		{"?before=" + otherRequest, "before"},
	} {
		st, _, raw := get(q.query)
		if code, param := openAIErr(raw); st != 400 || param != q.param || code != "invalid_request_error" {
			t.Errorf("%s: %d %v", q.query, st, raw)
		}
	}
	if st, _ := accountCall(t, "POST", "/v1/account/usage", k.Key, "{}"); st != http.StatusMethodNotAllowed {
		t.Errorf("POST usage: %d", st)
	}
	if st, _ := accountCall(t, "GET", "/v1/account/usage", "", ""); st != http.StatusUnauthorized {
		t.Errorf("usage without a key: %d", st)
	}
}

func TestAccountExport(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	if resp, _ := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model"}`); resp.StatusCode != 200 {
		t.Fatal("chat failed")
	}
	waitUsage(t, u.ID, 1)
	req, _ := http.NewRequest("GET", gatewayURL+"/v1/account/export", nil)
	req.Header.Set("Authorization", "Bearer "+k.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("export: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	var doc struct {
		ExportedAt time.Time `json:"exported_at"`
		User       struct {
			ID    string `json:"id"`
			Email string `json:"email"`
		} `json:"user"`
		Keys     []map[string]any `json:"keys"`
		Usage    []usageRecord    `json:"usage"`
		Payments []any            `json:"payments"`
		Ledger   []any            `json:"ledger"`
		Audit    []struct {
			Action string `json:"action"`
		} `json:"audit"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("export is not one JSON document: %v\n%s", err, body)
	}
	if doc.User.ID != u.ID || doc.User.Email != "t@example.com" || len(doc.Keys) != 1 || len(doc.Usage) != 1 ||
		doc.Payments == nil || len(doc.Ledger) != 1 || doc.ExportedAt.IsZero() {
		t.Fatalf("export document: %s", body)
	}
	if doc.Keys[0]["id"] != k.ID || doc.Keys[0]["key"] != nil || doc.Keys[0]["hash"] != nil || strings.Contains(string(body), k.Key) {
		t.Fatalf("export shows a secret: %v", doc.Keys[0])
	}
	if len(doc.Audit) == 0 || doc.Audit[0].Action != "user.export" {
		t.Fatalf("the export is not in the audit trail it returns: %+v", doc.Audit)
	}
}

// legacyGet sends a GET as a chat client does and decodes the JSON answer.
func legacyGet(t *testing.T, c *http.Client, path string, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", httpsURL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("GET %s: %d, not JSON: %v", path, resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: content type %q", path, ct)
	}
	return resp.StatusCode, out
}

func num(t *testing.T, out map[string]any, field string) float64 {
	t.Helper()
	f, ok := out[field].(float64)
	if !ok {
		t.Fatalf("%s is not a number: %v", field, out)
	}
	return f
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// The legacy billing pair as chat clients call it (request shapes recorded
// from their sources), over the TLS site. The account got 10.00, lost 1.50
// to an admin debit and spent 0.040014 (40,000 prompt tokens at 1.00 per
// 1M and 7 completion tokens at 2.00 per 1M; the body is long enough for
// 40,000 prompt tokens to be a believable report).
func TestLegacyBillingForChatClients(t *testing.T) {
	gateway(t)
	c := httpsClient(t)
	u, k := newAccount(t, "10.00", "")
	if st := admin(t, "POST", "/aitoken/users/"+u.ID+"/credits", `{"amount":"-1.50","reason":"test debit"}`, nil); st != 200 {
		t.Fatalf("debit: %d", st)
	}
	if resp, body := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model","prompt_padding":"`+strings.Repeat("x", 40_000)+`"}`,
		"X-Mock-Prompt", "40000", "X-Mock-Deltas", "7"); resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	waitUsage(t, u.ID, 1)
	const (
		credited = 8.5
		spent    = 0.040014
		balance  = 8.459986
	)
	auth := "Bearer " + k.Key

	clients := []struct {
		name      string
		sub, used string
		hdr       []string
	}{
		// NextChat through its own server (app/api/common.ts): the base URL
		// has no /v1, and the proxy forwards the path without the query.
		{"NextChat server proxy", "/dashboard/billing/subscription", "/dashboard/billing/usage",
			[]string{"Content-Type", "application/json", "Cache-Control", "no-store", "Authorization", auth}},
		// NextChat calling from the browser or desktop app
		// (app/client/platforms/openai.ts usage()): month start to tomorrow.
		{"NextChat direct", "/dashboard/billing/subscription", "/dashboard/billing/usage?start_date=2026-11-01&end_date=2026-11-27",
			[]string{"Content-Type", "application/json", "Accept", "application/json", "Authorization", auth}},
		// chatgpt-web (service/src/chatgpt fetchUsage) and its forks: /v1 paths.
		{"chatgpt-web", "/v1/dashboard/billing/subscription", "/v1/dashboard/billing/usage?start_date=2026-11-01&end_date=2026-11-27",
			[]string{"Authorization", auth, "Content-Type", "application/json"}},
		// Balance checkers: a 90-day window, then remaining = hard − used/100.
		{"balance checker", "/v1/dashboard/billing/subscription", "/v1/dashboard/billing/usage?start_date=2026-08-29&end_date=2026-11-27",
			[]string{"Authorization", auth}},
	}
	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			st, sub := legacyGet(t, c, cl.sub, cl.hdr...)
			if st != 200 || sub["object"] != "billing_subscription" {
				t.Fatalf("subscription: %d %v", st, sub)
			}
			hard := num(t, sub, "hard_limit_usd")
			if !near(hard, credited) || !near(num(t, sub, "soft_limit_usd"), credited) || !near(num(t, sub, "system_hard_limit_usd"), credited) ||
				num(t, sub, "access_until") != 0 || sub["balance"] != "8.459986000" || sub["currency"] != "USD" {
				t.Fatalf("subscription: %v", sub)
			}
			if _, ok := sub["has_payment_method"].(bool); !ok {
				t.Fatalf("has_payment_method: %v", sub)
			}
			st, used := legacyGet(t, c, cl.used, cl.hdr...)
			if st != 200 || used["object"] != "list" {
				t.Fatalf("usage: %d %v", st, used)
			}
			cents := num(t, used, "total_usage")
			if !near(cents, spent*100) {
				t.Fatalf("total_usage %v cents, want %v", cents, spent*100)
			}
			// What the clients compute from it.
			if got := hard - cents/100; !near(got, balance) {
				t.Fatalf("remaining = hard_limit_usd − total_usage/100 = %v, want the balance %v", got, balance)
			}
			if shown := math.Round(cents) / 100; shown != 0.04 { // NextChat's "used"
				t.Fatalf("NextChat would show %v used", shown)
			}
		})
	}

	st, grants := legacyGet(t, c, "/v1/dashboard/billing/credit_grants", "Authorization", auth)
	if st != 200 || grants["object"] != "credit_summary" || !near(num(t, grants, "total_granted"), credited) ||
		!near(num(t, grants, "total_used"), spent) || !near(num(t, grants, "total_available"), balance) {
		t.Fatalf("credit_grants: %d %v", st, grants)
	}

	// Refusals keep OpenAI's shape (NextChat tells 401 apart).
	st, out := legacyGet(t, c, "/dashboard/billing/usage?start_date=2026-11-01&end_date=2026-11-27")
	if code, _ := openAIErr(out); st != 401 || code != "missing_api_key" {
		t.Fatalf("no key: %d %v", st, out)
	}
	st, out = legacyGet(t, c, "/v1/dashboard/billing/usage?start_date=2026-13-01&end_date=2026-11-27", "Authorization", auth)
	if code, param := openAIErr(out); st != 400 || code != "invalid_request_error" || param != "start_date" {
		t.Fatalf("bad date: %d %v", st, out)
	}
	if st, out = legacyGet(t, c, "/v1/dashboard/billing/invoices", "Authorization", auth); st != 404 {
		t.Fatalf("unknown legacy path: %d %v", st, out)
	}

	// A fresh account: nothing spent, the whole credit available; the
	// key's expiry is access_until.
	_, fresh := newAccount(t, "3.00", `{"user":"$USER","expires_at":"2030-01-02T03:04:05Z"}`)
	_, sub := legacyGet(t, c, "/v1/dashboard/billing/subscription", "Authorization", "Bearer "+fresh.Key)
	_, used := legacyGet(t, c, "/v1/dashboard/billing/usage", "Authorization", "Bearer "+fresh.Key)
	if !near(num(t, sub, "hard_limit_usd"), 3) || num(t, used, "total_usage") != 0 || num(t, sub, "access_until") != 1893553445 {
		t.Fatalf("fresh account: %v %v", sub, used)
	}
}
