package caddymodule_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/caddymodule"
)

// mintedCode is a code as POST /aitoken/codes answers it.
type mintedCode struct {
	ID        string `json:"id"`
	Code      string `json:"code"`
	Amount    string `json:"amount"`
	Status    string `json:"status"`
	Note      string `json:"note"`
	ExpiresAt string `json:"expires_at"`
}

// mint mints codes through the admin API.
func mint(t *testing.T, body string) []mintedCode {
	t.Helper()
	var out struct {
		Codes []mintedCode `json:"codes"`
	}
	if st := admin(t, "POST", "/aitoken/codes", body, &out); st != http.StatusCreated {
		t.Fatalf("mint %s: %d", body, st)
	}
	return out.Codes
}

// redeem redeems code with key through the account API.
func redeem(t *testing.T, key, code string) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"code": code})
	return accountCall(t, "POST", "/v1/account/redeem", key, string(b))
}

// A minted code credits the redeeming customer once; a second redeem, by
// the same customer or another, is 409; a void or expired code is
// refused; a redeemed code cannot be voided.
func TestCodesRedeemOnce(t *testing.T) {
	gateway(t)
	codes := mint(t, `{"amount":"10.00","count":3,"note":"batch 7"}`)
	if len(codes) != 3 {
		t.Fatalf("%d codes", len(codes))
	}
	for _, c := range codes {
		if !strings.HasPrefix(c.Code, "aitc-") || len(c.Code) != 37 || c.Amount != "10.000000000" || c.Status != "unused" || c.Note != "batch 7" {
			t.Fatalf("minted %+v", c)
		}
	}
	u, k := newAccount(t, "", "")
	_, other := newAccount(t, "", "")

	st, out := redeem(t, k.Key, codes[0].Code)
	if st != http.StatusOK || out["amount"] != "10.000000000" || out["balance"] != "10.000000000" || out["code_id"] != codes[0].ID || out["currency"] != "USD" {
		t.Fatalf("redeem: %d %v", st, out)
	}
	for _, key := range []string{k.Key, other.Key} {
		st, out := redeem(t, key, codes[0].Code)
		if code, param := openAIErr(out); st != http.StatusConflict || code != "code_already_redeemed" || param != "code" {
			t.Fatalf("second redeem: %d %v", st, out)
		}
	}
	if got := getUser(t, u.ID).Balance; got != "10.000000000" {
		t.Fatalf("balance %s after two refused redeems", got)
	}

	var voided mintedCode
	if st := admin(t, "DELETE", "/aitoken/codes/"+codes[1].ID, "", &voided); st != http.StatusOK || voided.Status != "void" {
		t.Fatalf("void: %d %+v", st, voided)
	}
	var e struct{ Error string }
	if st := admin(t, "DELETE", "/aitoken/codes/"+codes[0].ID, "", &e); st != http.StatusConflict ||
		e.Error != `code "`+codes[0].ID+`" was redeemed: it cannot be voided` {
		t.Fatalf("void of a redeemed code: %d %q", st, e.Error)
	}
	if st := admin(t, "DELETE", "/aitoken/codes/code_nope", "", &e); st != http.StatusNotFound || e.Error != `code "code_nope" not found` {
		t.Fatalf("void of an unknown code: %d %q", st, e.Error)
	}
	expireCode(t, codes[2].ID)
	for _, c := range []struct{ code, want string }{
		{codes[1].Code, "code_void"}, {codes[2].Code, "code_expired"}, {"aitc-" + strings.Repeat("x", 32), "invalid_code"},
		{"not even a code", "invalid_code"},
	} {
		st, out := redeem(t, other.Key, c.code)
		if code, _ := openAIErr(out); st != http.StatusBadRequest || code != c.want {
			t.Errorf("%s: %d %v", c.want, st, out)
		}
	}
	for _, body := range []string{`{}`, `{"code":"  "}`, `[]`} {
		st, out := accountCall(t, "POST", "/v1/account/redeem", k.Key, body)
		if code, _ := openAIErr(out); st != http.StatusBadRequest || code != "invalid_request_error" {
			t.Errorf("%s: %d %v", body, st, out)
		}
	}
	if st, _ := redeem(t, "", codes[0].Code); st != http.StatusUnauthorized {
		t.Errorf("no key: %d", st)
	}
	if st, _ := accountCall(t, "GET", "/v1/account/redeem", k.Key, ""); st != http.StatusMethodNotAllowed {
		t.Errorf("GET redeem: %d", st)
	}

	// The list shows each code's state, never a secret.
	for status, want := range map[string]string{"redeemed": codes[0].ID, "void": codes[1].ID, "expired": codes[2].ID} {
		var list struct {
			Codes []map[string]any `json:"codes"`
		}
		if st := admin(t, "GET", "/aitoken/codes?limit=1000&status="+status, "", &list); st != http.StatusOK {
			t.Fatalf("list %s: %d", status, st)
		}
		found := false
		for _, c := range list.Codes {
			if _, ok := c["code"]; ok || c["status"] != status {
				t.Fatalf("list %s: %v", status, c)
			}
			if c["id"] == want {
				found = true
				if status == "redeemed" && (c["redeemed_by"] != u.ID || c["redeemed_at"] == nil) {
					t.Fatalf("redeemed code listed as %v", c)
				}
			}
		}
		if !found {
			t.Errorf("%s not listed as %s", want, status)
		}
	}
	for _, q := range []string{"status=used", "limit=0", "cursor=code_nope", "user=x"} {
		if st := admin(t, "GET", "/aitoken/codes?"+q, "", &e); st != http.StatusBadRequest || !strings.HasPrefix(e.Error, strings.Split(q, "=")[0]+": ") {
			t.Errorf("%s: %d %q", q, st, e.Error)
		}
	}

	// A code in the user's export; an erased user's key cannot redeem.
	var doc struct {
		Codes []map[string]any `json:"codes"`
	}
	if st := admin(t, "GET", "/aitoken/users/"+u.ID+"/export", "", &doc); st != http.StatusOK || len(doc.Codes) != 1 || doc.Codes[0]["id"] != codes[0].ID {
		t.Fatalf("export: %d %v", st, doc.Codes)
	}
	fresh := mint(t, `{"amount":"1.00"}`)[0]
	var erased struct {
		CodesKept int `json:"codes_kept"`
	}
	if st := admin(t, "DELETE", "/aitoken/users/"+u.ID, "", &erased); st != http.StatusOK || erased.CodesKept != 1 {
		t.Fatalf("erase: %d %+v", st, erased)
	}
	if st, out := redeem(t, k.Key, fresh.Code); st != http.StatusUnauthorized {
		t.Fatalf("an erased user's key redeemed: %d %v", st, out)
	}
}

// expireCode moves a code's expiry into the past, in the ledger file.
func expireCode(t *testing.T, id string) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(env.dir, "ledger.db")+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE codes SET expires_at = ? WHERE id = ?`, time.Now().Add(-time.Second).UnixNano(), id); err != nil {
		t.Fatal(err)
	}
}

// Mints out of bounds are refused naming the field.
func TestCodesMintRefused(t *testing.T) {
	gateway(t)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for body, want := range map[string]string{
		`{}`:                                            "amount: required",
		`{"amount":"0"}`:                                "amount: must be positive",
		`{"amount":"-1.00"}`:                            "amount: must be positive",
		`{"amount":"abc"}`:                              "amount: ",
		`{"amount":"9007199.254740992"}`:                "amount: ",
		`{"amount":"1.00","count":0}`:                   "count: want 1 to 1000",
		`{"amount":"1.00","count":1001}`:                "count: want 1 to 1000",
		`{"amount":"1.00","count":"2"}`:                 "count: wrong type",
		`{"amount":"1.00","expires_at":"` + past + `"}`: "expires_at: must be in the future",
		`{"amount":"1.00","note":"` + strings.Repeat("n", 201) + `"}`: "note: longer than 200 characters",
		`{"amount":"1.00","secret":"x"}`:                              "secret: unknown field",
	} {
		var e struct{ Error string }
		if st := admin(t, "POST", "/aitoken/codes", body, &e); st != http.StatusBadRequest || !strings.HasPrefix(e.Error, want) {
			t.Errorf("%.60s: %d %q, want %q", body, st, e.Error, want)
		}
	}
}

// Twenty redeems of one code at once, with one key and with two users'
// keys: one credit, and the balances add up exactly.
func TestCodesConcurrentRedeem(t *testing.T) {
	gateway(t)
	for _, users := range []int{1, 2} {
		code := mint(t, `{"amount":"3.33"}`)[0]
		var accts []userResp
		var keys []string
		for range users {
			u, k := newAccount(t, "", "")
			accts, keys = append(accts, u), append(keys, k.Key)
		}
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			statuses = map[int]int{}
		)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, _ := redeem(t, keys[i%users], code.Code)
				mu.Lock()
				statuses[st]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if statuses[http.StatusOK] != 1 || statuses[http.StatusOK]+statuses[http.StatusConflict]+statuses[http.StatusTooManyRequests] != 20 {
			t.Fatalf("%d users: answers %v", users, statuses)
		}
		var sum int64
		for _, u := range accts {
			sum += mustNanos(t, getUser(t, u.ID).Balance)
		}
		if sum != 3_330_000_000 {
			t.Fatalf("%d users: balances add up to %d nanos, want 3.33", users, sum)
		}
	}
}

// Failed redeems are limited per key: the eleventh attempt within the
// hour is 429 with Retry-After, even with a good code, while another key
// still redeems it.
func TestCodesRedeemRateLimited(t *testing.T) {
	gateway(t)
	good := mint(t, `{"amount":"2.00"}`)[0]
	u, k := newAccount(t, "", "")
	for i := range 10 {
		if st, out := redeem(t, k.Key, "aitc-guess-"+strings.Repeat("z", i)); st != http.StatusBadRequest {
			t.Fatalf("guess %d: %d %v", i, st, out)
		}
	}
	req, _ := http.NewRequest("POST", gatewayURL+"/v1/account/redeem", strings.NewReader(`{"code":"`+good.Code+`"}`))
	req.Header.Set("Authorization", "Bearer "+k.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if code, _ := openAIErr(out); resp.StatusCode != http.StatusTooManyRequests || code != "rate_limit_exceeded" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("eleventh attempt: %d %v", resp.StatusCode, out)
	}
	var k2 keyResp
	if st := admin(t, "POST", "/aitoken/keys", `{"user":"`+u.ID+`"}`, &k2); st != http.StatusCreated {
		t.Fatal(st)
	}
	if st, out := redeem(t, k2.Key, good.Code); st != http.StatusOK || out["balance"] != "2.000000000" {
		t.Fatalf("another key: %d %v", st, out)
	}
}

// The secrets minted are nowhere in the ledger's files: only their
// hashes are stored.
func TestCodesSecretNotStored(t *testing.T) {
	gateway(t)
	codes := mint(t, `{"amount":"1.00","count":5}`)
	_, k := newAccount(t, "", "")
	if st, out := redeem(t, k.Key, codes[0].Code); st != http.StatusOK {
		t.Fatalf("redeem: %d %v", st, out)
	}
	files, _ := filepath.Glob(filepath.Join(env.dir, "ledger.db*"))
	if len(files) == 0 {
		t.Fatal("no ledger files")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range codes {
			if bytes.Contains(b, []byte(c.Code[len("aitc-"):])) {
				t.Fatalf("%s holds the secret of %s", f, c.ID)
			}
		}
	}
}

// The CLI mints, lists and voids codes: tables by default, --json raw.
func TestCLICodes(t *testing.T) {
	gateway(t)
	addr := strings.TrimPrefix(adminURL, "http://")
	out, err := caddymodule.RunCLI(t, "codes", "mint", "--amount", "4.50", "--count", "2", "--note", "cli batch", "--address", addr)
	if err != nil || strings.Count(out, "aitc-") != 2 || !strings.Contains(out, "ID  ") ||
		!strings.Contains(out, "2 codes; they are stored hashed and cannot be shown again") {
		t.Fatalf("mint: %v\n%s", err, out)
	}
	out, err = caddymodule.RunCLI(t, "codes", "mint", "--amount", "4.50", "--expires", time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		"--address", addr, "--json")
	var minted struct {
		Codes []mintedCode `json:"codes"`
	}
	if err != nil || json.Unmarshal([]byte(out), &minted) != nil || len(minted.Codes) != 1 || minted.Codes[0].ExpiresAt == "" {
		t.Fatalf("mint --json: %v %s", err, out)
	}
	c := minted.Codes[0]
	out, err = caddymodule.RunCLI(t, "codes", "list", "--status", "unused", "--limit", "1000", "--address", addr)
	if err != nil || !strings.Contains(out, c.ID) || strings.Contains(out, "aitc-") || !strings.Contains(out, "REDEEMED BY") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	out, err = caddymodule.RunCLI(t, "codes", "void", c.ID, "--address", addr)
	if err != nil || !strings.Contains(out, "void") {
		t.Fatalf("void: %v\n%s", err, out)
	}
	if _, k := newAccount(t, "", ""); true {
		if st, out := redeem(t, k.Key, c.Code); st != http.StatusBadRequest {
			t.Fatalf("a voided code redeemed: %d %v", st, out)
		}
	}
	out, err = caddymodule.RunCLI(t, "codes", "list", "--limit", "1", "--address", addr)
	if err != nil || !strings.Contains(out, "more: --cursor ") {
		t.Fatalf("list --limit 1: %v\n%s", err, out)
	}
}
