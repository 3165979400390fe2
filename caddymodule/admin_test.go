package caddymodule_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestAdminBadInputStoresNothing(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "2.00", "")
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		field                    string
	}{
		{"user: not JSON", "POST", "/aitoken/users", `{"email":`, 400, ""},
		{"user: empty body", "POST", "/aitoken/users", ``, 400, ""},
		{"user: unknown field", "POST", "/aitoken/users", `{"mail":"x@y.z"}`, 400, "mail"},
		{"user: bad id", "POST", "/aitoken/users", `{"id":"a b{c}"}`, 400, "id"},
		{"user: bad email", "POST", "/aitoken/users", `{"email":"nobody"}`, 400, "email"},
		{"user: wrong type", "POST", "/aitoken/users", `{"email":5}`, 400, "email"},
		{"user: trailing data", "POST", "/aitoken/users", `{} {}`, 400, ""},
		{"user: duplicate id", "POST", "/aitoken/users", `{"id":"` + u.ID + `"}`, 409, "id"},
		{"user: unknown", "GET", "/aitoken/users/nobody", ``, 404, ""},
		{"credit: not a decimal", "POST", "/aitoken/users/" + u.ID + "/credits", `{"amount":"abc"}`, 400, "amount"},
		{"credit: float", "POST", "/aitoken/users/" + u.ID + "/credits", `{"amount":"1e3"}`, 400, "amount"},
		{"credit: too precise", "POST", "/aitoken/users/" + u.ID + "/credits", `{"amount":"0.0000000001"}`, 400, "amount"},
		{"credit: missing", "POST", "/aitoken/users/" + u.ID + "/credits", `{"reason":"x"}`, 400, "amount"},
		{"credit: zero", "POST", "/aitoken/users/" + u.ID + "/credits", `{"amount":"0"}`, 400, "amount"},
		{"credit: unknown user", "POST", "/aitoken/users/nobody/credits", `{"amount":"1"}`, 404, ""},
		{"key: no user", "POST", "/aitoken/keys", `{}`, 400, "user"},
		{"key: unknown user", "POST", "/aitoken/keys", `{"user":"nobody"}`, 400, "user"},
		{"key: unpriced model", "POST", "/aitoken/keys", `{"user":"` + u.ID + `","models":["free-lunch"]}`, 400, "models"},
		{"key: expired", "POST", "/aitoken/keys", `{"user":"` + u.ID + `","expires_at":"2001-01-01T00:00:00Z"}`, 400, "expires_at"},
		{"key: bad time", "POST", "/aitoken/keys", `{"user":"` + u.ID + `","expires_at":"tomorrow"}`, 400, ""},
		{"keys: list without user", "GET", "/aitoken/keys", ``, 400, "user"},
		{"key: revoke unknown", "DELETE", "/aitoken/keys/key_nope", ``, 404, ""},
		{"usage: bad limit", "GET", "/aitoken/usage?limit=0", ``, 400, "limit"},
		{"usage: bad from", "GET", "/aitoken/usage?from=yesterday", ``, 400, "from"},
		{"method not allowed", "PUT", "/aitoken/users", `{}`, 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e struct {
				Error string `json:"error"`
			}
			st := admin(t, tc.method, tc.path, tc.body, nil)
			if st != tc.status {
				t.Fatalf("status %d, want %d", st, tc.status)
			}
			if tc.status == 405 {
				return
			}
			admin(t, tc.method, tc.path, tc.body, &e)
			if e.Error == "" || !strings.HasPrefix(e.Error, tc.field) {
				t.Fatalf("error %+v, want it to name field %q first", e, tc.field)
			}
		})
	}
	after := getUser(t, u.ID)
	if after.Balance != "2.000000000" {
		t.Fatalf("bad credits moved the balance: %s", after.Balance)
	}
	var keys struct {
		Keys []map[string]any `json:"keys"`
	}
	admin(t, "GET", "/aitoken/keys?user="+u.ID, "", &keys)
	if len(keys.Keys) != 1 || keys.Keys[0]["id"] != k.ID {
		t.Fatalf("bad key requests created keys: %+v", keys.Keys)
	}
	for _, key := range keys.Keys {
		for f, v := range key {
			if s, ok := v.(string); ok && strings.HasPrefix(s, "sk-ait-") && len(s) > 20 {
				t.Fatalf("key list shows a secret in %q", f)
			}
		}
	}
}

func TestAdminCreditsAndRevocation(t *testing.T) {
	gateway(t)
	var u userResp
	id := fmt.Sprintf("alice-%d", time.Now().UnixNano())
	if st := admin(t, "POST", "/aitoken/users", `{"id":"`+id+`","email":"alice@example.com","name":"Alice"}`, &u); st != http.StatusCreated {
		t.Fatalf("create: %d", st)
	}
	if u.ID != id || u.Email != "alice@example.com" || u.Balance != "0.000000000" {
		t.Fatalf("user %+v", u)
	}
	admin(t, "POST", "/aitoken/users/"+u.ID+"/credits", `{"amount":"10.50"}`, &u)
	admin(t, "POST", "/aitoken/users/"+u.ID+"/credits", `{"amount":"-0.25","reason":"goodwill reversal"}`, &u)
	if u.Balance != "10.250000000" {
		t.Fatalf("balance %s", u.Balance)
	}
	var k keyResp
	admin(t, "POST", "/aitoken/keys", `{"user":"`+u.ID+`","name":"laptop"}`, &k)
	if !strings.HasPrefix(k.Key, "sk-ait-") {
		t.Fatalf("key %+v", k)
	}
	resp, _ := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("before revocation: %d", resp.StatusCode)
	}
	if st := admin(t, "DELETE", "/aitoken/keys/"+k.ID, "", nil); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}
	resp, body := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model"}`)
	apiErr(t, resp, body, 401, "invalid_api_key")
	waitUsage(t, u.ID, 1)
}
