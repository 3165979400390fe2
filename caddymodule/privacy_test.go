package caddymodule_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/caddymodule"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

const privacyChat = `{"model":"test-model","messages":[{"role":"user","content":"hi"}]}`

// exportDoc is what GET /aitoken/users/{id}/export answers.
type exportDoc struct {
	ExportedAt time.Time `json:"exported_at"`
	User       struct {
		ID     string `json:"id"`
		Email  string `json:"email"`
		Name   string `json:"name"`
		Status string `json:"status"`
	} `json:"user"`
	LedgerBalance string            `json:"ledger_balance"`
	Keys          []map[string]any  `json:"keys"`
	Ledger        []map[string]any  `json:"ledger"`
	Payments      []map[string]any  `json:"payments"`
	Audit         []map[string]any  `json:"audit"`
	Usage         []usagelog.Record `json:"usage"`
}

// export fetches a user's export and returns it decoded and raw.
func export(t *testing.T, user string) (exportDoc, string) {
	t.Helper()
	resp, err := http.Get(adminURL + "/aitoken/users/" + user + "/export")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("export: %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	var doc exportDoc
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("export is not JSON: %v: %.300s", err, b)
	}
	if dec.More() {
		t.Fatal("export holds more than one JSON document")
	}
	return doc, string(b)
}

// topup credits user through a signed Stripe webhook, making a payment row.
func topup(t *testing.T, user string, cents int64) string {
	t.Helper()
	cs := uniq("cs")
	deliver(t, stripeEvent("", "checkout.session.completed", "", sessionObject(cs, user, "paid", cents, "usd")), "credited")
	return "topup:" + cs
}

func auditOf(t *testing.T, user string) []map[string]any {
	t.Helper()
	var out struct {
		Entries []map[string]any `json:"entries"`
	}
	if st := admin(t, "GET", "/aitoken/audit?user="+user, "", &out); st != http.StatusOK {
		t.Fatalf("audit: %d", st)
	}
	return out.Entries
}

func TestExportHoldsEverythingButSecrets(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "3.00", "")
	var k2 keyResp
	admin(t, "POST", "/aitoken/keys", `{"user":"`+u.ID+`","name":"second"}`, &k2)
	for range 2 {
		if resp, body := post(t, "/v1/chat/completions", k.Key, privacyChat); resp.StatusCode != 200 {
			t.Fatalf("call: %d %s", resp.StatusCode, body)
		}
	}
	recs := waitUsage(t, u.ID, 2)
	ref := topup(t, u.ID, 500)

	doc, raw := export(t, u.ID)
	if doc.User.ID != u.ID || doc.User.Email != "t@example.com" || doc.User.Status != "active" ||
		time.Since(doc.ExportedAt) > time.Minute {
		t.Fatalf("profile %+v, exported at %s", doc.User, doc.ExportedAt)
	}
	if len(doc.Usage) != 2 || doc.Usage[0].RequestID != recs[1].RequestID || doc.Usage[1].RequestID != recs[0].RequestID ||
		doc.Usage[0].ClientIP == "" || doc.Usage[0].Cost == 0 {
		t.Fatalf("usage %+v, want %+v", doc.Usage, recs)
	}
	if len(doc.Payments) != 1 || doc.Payments[0]["ref"] != ref {
		t.Fatalf("payments %+v", doc.Payments)
	}
	if len(doc.Ledger) != 2 || doc.Ledger[0]["amount"] != "3.000000000" || doc.Ledger[1]["amount"] != "5.000000000" {
		t.Fatalf("ledger %+v", doc.Ledger)
	}
	if len(doc.Keys) != 2 {
		t.Fatalf("keys %+v", doc.Keys)
	}
	// The ledger balance agrees with the live one (no holds are left).
	if got := getUser(t, u.ID).Balance; doc.LedgerBalance != got {
		t.Fatalf("ledger balance %s, live %s", doc.LedgerBalance, got)
	}
	for _, secret := range []string{k.Key, k2.Key, billing.HashKey(k.Key), billing.HashKey(k2.Key)} {
		if strings.Contains(raw, secret) {
			t.Fatalf("export shows a key secret or hash %q", secret[:12])
		}
	}
	if strings.Contains(raw, `"hash"`) {
		t.Fatal("export has a hash field")
	}
	// The export is itself in the audit trail (and in the next export).
	if a := auditOf(t, u.ID); len(a) != 1 || a[0]["action"] != "user.export" {
		t.Fatalf("audit %+v", a)
	}
	if doc, _ := export(t, u.ID); len(doc.Audit) != 2 {
		t.Fatalf("second export's audit %+v", doc.Audit)
	}
}

func TestDeleteUserErasesAndRevokes(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "2.00", "")
	var k2 keyResp
	if st := admin(t, "POST", "/aitoken/keys", `{"user":"`+u.ID+`","name":"Jane's phone","allowed_ips":["198.51.100.23"]}`, &k2); st != http.StatusCreated {
		t.Fatalf("second key: %d", st)
	}
	if resp, body := post(t, "/v1/chat/completions", k.Key, privacyChat); resp.StatusCode != 200 {
		t.Fatalf("call: %d %s", resp.StatusCode, body)
	}
	waitUsage(t, u.ID, 1)
	ref := topup(t, u.ID, 700)
	other, otherKey := newAccount(t, "1.00", "")
	if resp, _ := post(t, "/v1/chat/completions", otherKey.Key, privacyChat); resp.StatusCode != 200 {
		t.Fatal("other user's call")
	}
	waitUsage(t, other.ID, 1)
	balance := getUser(t, u.ID).Balance

	var e struct {
		User               string `json:"user"`
		Status             string `json:"status"`
		AlreadyDeleted     bool   `json:"already_deleted"`
		KeysRevoked        int    `json:"keys_revoked"`
		KeysRevokedInRedis int    `json:"keys_revoked_in_redis"`
		UsageAnonymised    int    `json:"usage_rows_anonymised"`
		PaymentsKept       int    `json:"payments_kept"`
		AuditID            int64  `json:"audit_id"`
	}
	if st := admin(t, "DELETE", "/aitoken/users/"+u.ID, "", &e); st != http.StatusOK {
		t.Fatalf("delete: %d %+v", st, e)
	}
	if e.User != u.ID || e.Status != "deleted" || e.AlreadyDeleted || e.KeysRevoked != 2 || e.KeysRevokedInRedis != 2 ||
		e.UsageAnonymised != 1 || e.PaymentsKept != 1 || e.AuditID == 0 {
		t.Fatalf("erasure %+v", e)
	}

	// Every key is refused at once, through the gateway.
	for _, key := range []string{k.Key, k2.Key} {
		resp, body := post(t, "/v1/chat/completions", key, privacyChat)
		apiErr(t, resp, body, 401, "invalid_api_key")
	}
	// Redis keeps no allowed IPs of the erased user's keys either.
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr})
	defer rdb.Close()
	rec, err := rdb.HGetAll(context.Background(), "ait:key:"+billing.HashKey(k2.Key)).Result()
	if err != nil || rec["status"] != "revoked" || strings.Contains(fmt.Sprint(rec), "198.51.100.23") {
		t.Fatalf("redis key record after delete: %v %v", rec, err)
	}
	var after struct {
		userResp
		Name   string `json:"name"`
		Status string `json:"status"`
	}
	admin(t, "GET", "/aitoken/users/"+u.ID, "", &after)
	if after.Email != "" || after.Name != "" || after.Status != "deleted" || after.Balance != balance {
		t.Fatalf("user after delete %+v (balance was %s)", after, balance)
	}
	if p, ok := payments(t, u.ID)[ref]; !ok || p.Status != "paid" {
		t.Fatalf("payment gone after delete: %+v", payments(t, u.ID))
	}
	var keys struct {
		Keys []map[string]any `json:"keys"`
	}
	admin(t, "GET", "/aitoken/keys?user="+u.ID, "", &keys)
	for _, key := range keys.Keys {
		if key["status"] != "revoked" || key["name"] != "" {
			t.Fatalf("key after delete %+v", key)
		}
	}
	for _, r := range usageOfFull(t, u.ID) {
		if r.ClientIP != "" || r.User != u.ID {
			t.Fatalf("usage row after delete %+v", r)
		}
	}
	if r := usageOfFull(t, other.ID); len(r) != 1 || r[0].ClientIP == "" {
		t.Fatalf("another user's row was anonymised: %+v", r)
	}
	a := auditOf(t, u.ID)
	if len(a) != 1 || a[0]["action"] != "user.delete" || int64(a[0]["id"].(float64)) != e.AuditID {
		t.Fatalf("audit %+v", a)
	}
	doc, raw := export(t, u.ID)
	if doc.User.Status != "deleted" || strings.Contains(raw, "t@example.com") || strings.Contains(raw, "Jane") || strings.Contains(raw, "198.51.100.23") ||
		len(doc.Payments) != 1 || len(doc.Usage) != 1 || doc.Usage[0].ClientIP != "" {
		t.Fatalf("export after delete: %s", raw)
	}
	// No new key for an erased user; a second delete is harmless.
	var ke struct {
		Error string `json:"error"`
	}
	if st := admin(t, "POST", "/aitoken/keys", `{"user":"`+u.ID+`"}`, &ke); st != 400 || !strings.HasPrefix(ke.Error, "user: ") {
		t.Fatalf("key for an erased user: %d %+v", st, ke)
	}
	e.AuditID = 0 // omitted when nothing was recorded
	if st := admin(t, "DELETE", "/aitoken/users/"+u.ID, "", &e); st != http.StatusOK || !e.AlreadyDeleted || e.KeysRevoked != 0 || e.AuditID != 0 {
		t.Fatalf("second delete: %d %+v", st, e)
	}
	// The other user is untouched.
	if resp, _ := post(t, "/v1/chat/completions", otherKey.Key, privacyChat); resp.StatusCode != 200 {
		t.Fatalf("other user refused after an erasure: %d", resp.StatusCode)
	}
	waitUsage(t, other.ID, 2)
}

// usageOfFull is usageOf with every field of the records.
func usageOfFull(t *testing.T, user string) []usagelog.Record {
	t.Helper()
	var out struct {
		Records []usagelog.Record `json:"records"`
	}
	if st := admin(t, "GET", "/aitoken/usage?limit=1000&user="+user, "", &out); st != http.StatusOK {
		t.Fatalf("usage: %d", st)
	}
	return out.Records
}

func TestUsageSummaryAndPages(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "5.00", "")
	for _, model := range []string{"test-model", "test-model", "other-model"} {
		if resp, body := post(t, "/v1/chat/completions", k.Key, `{"model":"`+model+`","messages":[]}`); resp.StatusCode != 200 {
			t.Fatalf("call: %d %s", resp.StatusCode, body)
		}
	}
	recs := waitUsage(t, u.ID, 3)
	var wantCost, wantIn, wantOut int64
	for _, r := range recs {
		wantCost += mustNanos(t, r.Cost)
		wantIn += r.InputTokens
		wantOut += r.OutputTokens
	}

	type totals struct {
		Model           string `json:"model"`
		Day             string `json:"day"`
		Requests        int64  `json:"requests"`
		InputTokens     int64  `json:"input_tokens"`
		CachedTokens    int64  `json:"cached_input_tokens"`
		OutputTokens    int64  `json:"output_tokens"`
		ReasoningTokens *int64 `json:"reasoning_tokens"`
		Cost            string `json:"cost"`
	}
	var s struct {
		User     string   `json:"user"`
		GroupBy  string   `json:"group_by"`
		Currency string   `json:"currency"`
		Groups   []totals `json:"groups"`
		Total    totals   `json:"total"`
	}
	if st := admin(t, "GET", "/aitoken/usage/summary?group_by=model&user="+u.ID, "", &s); st != http.StatusOK {
		t.Fatalf("summary: %d", st)
	}
	if len(s.Groups) != 2 || s.Groups[0].Model != "other-model" || s.Groups[0].Requests != 1 ||
		s.Groups[1].Model != "test-model" || s.Groups[1].Requests != 2 || s.Total.Requests != 3 ||
		mustNanos(t, s.Total.Cost) != wantCost || s.Total.InputTokens != wantIn || s.Total.OutputTokens != wantOut ||
		s.Total.ReasoningTokens == nil || s.Currency != "USD" || s.GroupBy != "model" {
		t.Fatalf("by model: %+v (want cost %d)", s, wantCost)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	s.Groups = nil
	admin(t, "GET", "/aitoken/usage/summary?group_by=day&user="+u.ID+"&from="+today, "", &s)
	if len(s.Groups) != 1 || s.Groups[0].Day != today || s.Groups[0].Requests != 3 || mustNanos(t, s.Groups[0].Cost) != wantCost {
		t.Fatalf("by day: %+v", s)
	}
	s.Groups = nil
	admin(t, "GET", "/aitoken/usage/summary?user="+u.ID+"&to="+today, "", &s)
	if len(s.Groups) != 0 || s.Total.Requests != 0 {
		t.Fatalf("before today: %+v", s)
	}

	// Usage pages: limit and the before/next cursor walk every row once.
	var seen []string
	before := ""
	for page := 0; ; page++ {
		var out struct {
			Records []usageRecord `json:"records"`
			Next    string        `json:"next"`
		}
		q := "/aitoken/usage?limit=2&user=" + u.ID
		if before != "" {
			q += "&before=" + url.QueryEscape(before)
		}
		if st := admin(t, "GET", q, "", &out); st != http.StatusOK || page > 3 {
			t.Fatalf("page %d: %d", page, st)
		}
		for _, r := range out.Records {
			seen = append(seen, r.RequestID)
		}
		if out.Next == "" {
			break
		}
		before = out.Next
	}
	if len(seen) != 3 || seen[0] != recs[0].RequestID || seen[2] != recs[2].RequestID {
		t.Fatalf("pages %v, want %v", seen, recs)
	}

	// Payment pages.
	refs := []string{topup(t, u.ID, 100), topup(t, u.ID, 200), topup(t, u.ID, 300)}
	var got []string
	next := ""
	for page := 0; ; page++ {
		var out struct {
			Payments []paymentResp `json:"payments"`
			Next     string        `json:"next"`
		}
		q := "/aitoken/payments?limit=2&user=" + u.ID
		if next != "" {
			q += "&before=" + next
		}
		if st := admin(t, "GET", q, "", &out); st != http.StatusOK || page > 3 {
			t.Fatalf("payments page %d: %d", page, st)
		}
		for _, p := range out.Payments {
			got = append(got, p.Ref)
		}
		if out.Next == "" {
			break
		}
		next = out.Next
	}
	if len(got) != 3 || got[0] != refs[2] || got[2] != refs[0] {
		t.Fatalf("payment pages %v, want newest first of %v", got, refs)
	}
}

func TestPrivacyRoutesRefuseBadInput(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	auditBefore := len(auditOf(t, u.ID))
	for _, tc := range []struct {
		name, method, path string
		status             int
		field              string
	}{
		{"export: unknown user", "GET", "/aitoken/users/nobody-here/export", 404, ""},
		{"export: unknown parameter", "GET", "/aitoken/users/" + u.ID + "/export?format=csv", 400, "format"},
		{"delete: unknown user", "DELETE", "/aitoken/users/nobody-here", 404, ""},
		{"delete: unknown parameter", "DELETE", "/aitoken/users/" + u.ID + "?force=1", 400, "force"},
		{"summary: bad group", "GET", "/aitoken/usage/summary?group_by=key", 400, "group_by"},
		{"summary: bad from", "GET", "/aitoken/usage/summary?from=yesterday", 400, "from"},
		{"summary: bad to", "GET", "/aitoken/usage/summary?to=2026-13-01", 400, "to"},
		{"summary: to before from", "GET", "/aitoken/usage/summary?from=2026-02-01&to=2026-01-01", 400, "to"},
		{"summary: empty user", "GET", "/aitoken/usage/summary?user=", 400, "user"},
		{"summary: misspelt filter", "GET", "/aitoken/usage/summary?usr=" + u.ID, 400, "usr"},
		{"summary: twice", "GET", "/aitoken/usage/summary?user=a&user=b", 400, "user"},
		{"usage: unknown cursor", "GET", "/aitoken/usage?before=req_nope", 400, "before"},
		{"usage: limit too big", "GET", "/aitoken/usage?limit=1001", 400, "limit"},
		{"usage: unknown parameter", "GET", "/aitoken/usage?users=" + u.ID, 400, "users"},
		{"usage: empty window", "GET", "/aitoken/usage?from=2026-01-02&to=2026-01-02", 400, "to"},
		{"payments: bad limit", "GET", "/aitoken/payments?limit=0", 400, "limit"},
		{"payments: bad cursor", "GET", "/aitoken/payments?before=abc", 400, "before"},
		{"payments: unknown cursor", "GET", "/aitoken/payments?before=999999999", 400, "before"},
		{"payments: unknown parameter", "GET", "/aitoken/payments?user=" + u.ID + "&status=paid", 400, "status"},
		{"audit: bad limit", "GET", "/aitoken/audit?limit=x", 400, "limit"},
		{"audit: bad cursor", "GET", "/aitoken/audit?before=-1", 400, "before"},
		{"keys: unknown parameter", "GET", "/aitoken/keys?user=" + u.ID + "&all=1", 400, "all"},
		{"delete: wrong method", "PATCH", "/aitoken/users/" + u.ID, 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e struct {
				Error string `json:"error"`
			}
			var out any = &e
			if tc.status == 405 {
				out = nil
			}
			st := admin(t, tc.method, tc.path, "", out)
			if st != tc.status {
				t.Fatalf("status %d, want %d (%+v)", st, tc.status, e)
			}
			if tc.status != 405 && (e.Error == "" || !strings.HasPrefix(e.Error, tc.field)) {
				t.Fatalf("error %+v, want it to name field %q first", e, tc.field)
			}
		})
	}
	// Nothing was written: the user is whole, the key works, no audit
	// entry was made.
	after := getUser(t, u.ID)
	if after.Email != "t@example.com" || after.Balance != "1.000000000" {
		t.Fatalf("user changed: %+v", after)
	}
	if resp, body := post(t, "/v1/chat/completions", k.Key, privacyChat); resp.StatusCode != 200 {
		t.Fatalf("key refused after bad requests: %d %s", resp.StatusCode, body)
	}
	if n := len(auditOf(t, u.ID)); n != auditBefore {
		t.Fatalf("bad requests made %d audit entries", n-auditBefore)
	}
	waitUsage(t, u.ID, 1)
}

// Retention deletes exactly the rows past their age, and no balance moves:
// the live one in Redis, the ledger's, and reconcile finds nothing to fix.
func TestRetentionKeepsBalances(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "4.00", "")
	if resp, _ := post(t, "/v1/chat/completions", k.Key, privacyChat); resp.StatusCode != 200 {
		t.Fatal("call")
	}
	fresh := waitUsage(t, u.ID, 1)
	now := time.Now().UTC()
	var old []usagelog.Record
	const day = 24 * time.Hour
	// Past their 365 days: by a lot, by a day, by an hour.
	for i, age := range []time.Duration{400 * day, 366 * day, 365*day + time.Hour} {
		old = append(old, usagelog.Record{
			RequestID: fmt.Sprintf("old-%s-%d", u.ID, i), Time: now.Add(-age),
			User: u.ID, KeyID: k.ID, Model: "test-model", Endpoint: "/v1/chat/completions", Status: 200,
			Outcome: "ok", InputTokens: 10, OutputTokens: 10, Cost: money.Nanos(1_000_000 * (i + 1)),
			Currency: "USD", ClientIP: "192.0.2.7",
		})
	}
	// Within them: stays.
	keep := usagelog.Record{RequestID: "keep-" + u.ID, Time: now.Add(-364 * day), User: u.ID, KeyID: k.ID,
		Model: "test-model", Status: 200, Outcome: "ok", Cost: money.Nanos(500_000), Currency: "USD"}
	caddymodule.InjectBilledUsage(t, append(old, keep))
	liveBefore := getUser(t, u.ID).Balance
	docBefore, _ := export(t, u.ID)
	if len(docBefore.Usage) != 5 || docBefore.LedgerBalance != liveBefore {
		t.Fatalf("before: %d rows, ledger %s live %s", len(docBefore.Usage), docBefore.LedgerBalance, liveBefore)
	}

	res := caddymodule.RunRetention(t, now)
	if res.UsageRows < 3 || res.RollupEntries < 1 {
		t.Fatalf("retention %+v", res)
	}
	rows := usageOfFull(t, u.ID)
	if len(rows) != 2 || rows[0].RequestID != fresh[0].RequestID || rows[1].RequestID != keep.RequestID {
		t.Fatalf("rows left %+v", rows)
	}
	if got := getUser(t, u.ID).Balance; got != liveBefore {
		t.Fatalf("live balance %s, was %s", got, liveBefore)
	}
	doc, _ := export(t, u.ID)
	if doc.LedgerBalance != liveBefore {
		t.Fatalf("ledger balance %s, was %s", doc.LedgerBalance, liveBefore)
	}
	var rolled int64
	for _, e := range doc.Ledger {
		if e["kind"] == "usage_rollup" {
			rolled += mustNanos(t, e["amount"].(string))
			if ref, _ := e["ref"].(string); !strings.HasPrefix(ref, "usage_rollup:"+u.ID+":") {
				t.Fatalf("roll-up ref %q", ref)
			}
		}
	}
	if rolled != -6_000_000 {
		t.Fatalf("roll-ups %d, want -6000000 (the deleted rows' cost)", rolled)
	}
	var rep struct {
		Accounts []struct {
			User string `json:"user"`
		} `json:"accounts"`
	}
	admin(t, "POST", "/aitoken/reconcile", "", &rep)
	for _, a := range rep.Accounts {
		if a.User == u.ID {
			t.Fatalf("reconcile finds the account off after retention: %+v", rep)
		}
	}
	var a struct {
		Entries []map[string]any `json:"entries"`
	}
	admin(t, "GET", "/aitoken/audit?action=retention.purge&limit=1", "", &a)
	if len(a.Entries) != 1 || int64(a.Entries[0]["id"].(float64)) != res.AuditID {
		t.Fatalf("retention audit %+v, want id %d", a.Entries, res.AuditID)
	}
}

func TestCLIPrivacyCommands(t *testing.T) {
	gateway(t)
	addr := strings.TrimPrefix(adminURL, "http://")
	u, k := newAccount(t, "2.00", "")
	if resp, _ := post(t, "/v1/chat/completions", k.Key, privacyChat); resp.StatusCode != 200 {
		t.Fatal("call")
	}
	waitUsage(t, u.ID, 1)
	ref := topup(t, u.ID, 900)

	out, err := caddymodule.RunCLI(t, "users", "export", u.ID, "--address", addr)
	if err != nil || !json.Valid([]byte(out)) || !strings.Contains(out, ref) || !strings.Contains(out, `"usage":[`) ||
		strings.Contains(out, k.Key) {
		t.Fatalf("users export: %v %.300s", err, out)
	}
	out, err = caddymodule.RunCLI(t, "usage", "summary", "--user", u.ID, "--group-by", "model", "--address", addr)
	if err != nil || !strings.Contains(out, "test-model") || !strings.Contains(out, "TOTAL") || !strings.Contains(out, "MODEL") {
		t.Fatalf("usage summary: %v\n%s", err, out)
	}
	if out, err = caddymodule.RunCLI(t, "usage", "summary", "--group-by", "key", "--address", addr); err == nil ||
		err.Error() != `--group-by "key": want model or day` {
		t.Fatalf("usage summary --group-by key: %v %s", err, out)
	}
	out, err = caddymodule.RunCLI(t, "usage", "--user", u.ID, "--limit", "1", "--address", addr)
	if err != nil || !strings.Contains(out, "more: --before") { // a full page: there may be more
		t.Fatalf("usage: %v\n%s", err, out)
	}
	out, err = caddymodule.RunCLI(t, "payments", "--user", u.ID, "--address", addr)
	if err != nil || !strings.Contains(out, ref) || !strings.Contains(out, "9.00 USD") {
		t.Fatalf("payments: %v\n%s", err, out)
	}
	out, err = caddymodule.RunCLI(t, "users", "delete", u.ID, "--address", addr)
	if err != nil || !strings.Contains(out, "user "+u.ID+" erased") || !strings.Contains(out, "1 payment records kept") {
		t.Fatalf("users delete: %v\n%s", err, out)
	}
	out, err = caddymodule.RunCLI(t, "audit", "--user", u.ID, "--address", addr)
	if err != nil || !strings.Contains(out, "user.delete") || !strings.Contains(out, "user.export") {
		t.Fatalf("audit: %v\n%s", err, out)
	}
	if out, err = caddymodule.RunCLI(t, "users", "delete", "nobody-here", "--address", addr); err == nil {
		t.Fatalf("deleting an unknown user succeeded: %s", out)
	}
	resp, body := post(t, "/v1/chat/completions", k.Key, privacyChat)
	apiErr(t, resp, body, 401, "invalid_api_key")
}
