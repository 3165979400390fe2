package caddymodule_test

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// keyWithIPs creates a funded account and a key limited to allowed (a JSON
// array), and returns the user ID, key ID and secret.
func keyWithIPs(t *testing.T, allowed string) (string, keyResp) {
	t.Helper()
	u, _ := newAccount(t, "1.00", "")
	var k keyResp
	if st := admin(t, "POST", "/aitoken/keys", `{"user":"`+u.ID+`","allowed_ips":`+allowed+`}`, &k); st != http.StatusCreated {
		t.Fatalf("create key with allowed_ips %s: %d", allowed, st)
	}
	return u.ID, k
}

func TestKeyAllowedIPsValidated(t *testing.T) {
	gateway(t)
	u, _ := newAccount(t, "", "")
	for _, bad := range []string{`["10.0.0.0/33"]`, `["not-an-ip"]`, `["10.0.0.1:80"]`, `[""]`, `"10.0.0.1"`, `[1]`} {
		var e struct {
			Error string `json:"error"`
		}
		st := admin(t, "POST", "/aitoken/keys", `{"user":"`+u.ID+`","allowed_ips":`+bad+`}`, &e)
		if st != http.StatusBadRequest || !strings.HasPrefix(e.Error, "allowed_ips: ") {
			t.Errorf("allowed_ips %s: %d %+v", bad, st, e)
		}
	}
	var k struct {
		ID         string   `json:"id"`
		Key        string   `json:"key"`
		AllowedIPs []string `json:"allowed_ips"`
	}
	if st := admin(t, "POST", "/aitoken/keys", `{"user":"`+u.ID+`","allowed_ips":["203.0.113.9","10.1.2.3/8","2001:db8::1/32"]}`, &k); st != http.StatusCreated {
		t.Fatalf("create: %d", st)
	}
	want := []string{"203.0.113.9/32", "10.0.0.0/8", "2001:db8::/32"}
	if !slices.Equal(k.AllowedIPs, want) {
		t.Fatalf("allowed_ips answered %q, want the normalized %q", k.AllowedIPs, want)
	}
	var list struct {
		Keys []struct {
			ID         string   `json:"id"`
			AllowedIPs []string `json:"allowed_ips"`
		} `json:"keys"`
	}
	admin(t, "GET", "/aitoken/keys?user="+u.ID, "", &list)
	i := slices.IndexFunc(list.Keys, func(l struct {
		ID         string   `json:"id"`
		AllowedIPs []string `json:"allowed_ips"`
	}) bool {
		return l.ID == k.ID
	})
	if i < 0 || !slices.Equal(list.Keys[i].AllowedIPs, want) {
		t.Fatalf("stored keys %+v", list.Keys)
	}
}

// Tests reach the gateway from loopback (127.0.0.1 or ::1, whichever
// "localhost" resolves to).
func TestKeyAllowedIPsEnforced(t *testing.T) {
	gateway(t)
	chat := `{"model":"test-model","messages":[{"role":"user","content":"hi"}]}`

	// Allowed: loopback in either family.
	okUser, ok := keyWithIPs(t, `["127.0.0.0/8","::1"]`)
	if resp, body := post(t, "/v1/chat/completions", ok.Key, chat); resp.StatusCode != 200 {
		t.Fatalf("allowed address refused: %d %s", resp.StatusCode, body)
	}
	waitUsage(t, okUser, 1)
	if st, out := accountCall(t, "GET", "/v1/account", ok.Key, ""); st != 200 {
		t.Fatalf("account API from an allowed address: %d %v", st, out)
	}

	// Refused: the client address is outside every range.
	user, denied := keyWithIPs(t, `["192.0.2.0/24","2001:db8::/32"]`)
	const tag = "allowed-ips-refused"
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      []string
	}{
		{"chat", "POST", "/v1/chat/completions", chat, nil},
		{"stream", "POST", "/v1/chat/completions", `{"model":"test-model","stream":true}`, nil},
		{"bad body", "POST", "/v1/chat/completions", `{"model":`, nil},
		{"unmetered path", "GET", "/v1/models", "", nil},
		// Without trusted_proxies a forwarded address is not believed.
		{"spoofed X-Forwarded-For", "POST", "/v1/chat/completions", chat, []string{"X-Forwarded-For", "192.0.2.7"}},
		{"x-api-key", "POST", "/v1/messages", `{"model":"claude-test","max_tokens":5,"messages":[]}`, []string{"X-Api-Key", denied.Key}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, gatewayURL+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			if tc.path != "/v1/messages" { // that one sends x-api-key
				req.Header.Set("Authorization", "Bearer "+denied.Key)
			}
			req.Header.Set("X-Test-Tag", tag)
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				req.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			apiErr(t, resp, body, http.StatusForbidden, "ip_not_allowed")
			if !strings.Contains(string(body), `"type":"permission_error"`) {
				t.Fatalf("error type: %s", body)
			}
		})
	}
	if n := hits(tag); n != 0 {
		t.Fatalf("%d refused requests reached the upstream", n)
	}
	st, out := accountCall(t, "GET", "/v1/account", denied.Key, "")
	if code, _ := openAIErr(out); st != http.StatusForbidden || code != "ip_not_allowed" {
		t.Fatalf("account API from a refused address: %d %v", st, out)
	}
	// Nothing was held or debited, and nothing recorded.
	if got := getUser(t, user); got.Balance != "1.000000000" || got.Held != "0.000000000" {
		t.Fatalf("refusals changed the account: %+v", got)
	}
	if recs := usageOf(t, user); len(recs) != 0 {
		t.Fatalf("refusals were recorded: %+v", recs)
	}
	// A bad key is still a 401, whatever the address.
	resp, body := post(t, "/v1/chat/completions", "sk-ait-unknown", chat)
	apiErr(t, resp, body, http.StatusUnauthorized, "invalid_api_key")
}
