package caddymodule_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/cnaitoken/caddy-aitoken/caddymodule"
)

// PATCH /aitoken/keys/{id} changes only the fields given, the very next
// request sees the change (every node reads the key from Redis), bad
// fields are refused naming them, and a revoked key stays revoked.
func TestKeyUpdate(t *testing.T) {
	gateway(t)
	_, k := newAccount(t, "1.00", "")
	chat := func(model string) int {
		t.Helper()
		resp, _ := post(t, "/v1/chat/completions", k.Key, `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
		return resp.StatusCode
	}
	if st := chat("other-model"); st != http.StatusOK {
		t.Fatalf("before the update: %d", st)
	}

	var got struct {
		Name   string   `json:"name"`
		Models []string `json:"models"`
		RPM    int64    `json:"rpm"`
		TPM    int64    `json:"tpm"`
		IPs    []string `json:"allowed_ips"`
		Expiry *string  `json:"expires_at"`
	}
	if st := admin(t, "PATCH", "/aitoken/keys/"+k.ID, `{"models":["test-model"],"name":"ci","expires_at":"2999-01-01T00:00:00Z"}`, &got); st != http.StatusOK {
		t.Fatalf("PATCH: %d", st)
	}
	if got.Name != "ci" || len(got.Models) != 1 || got.Models[0] != "test-model" || got.Expiry == nil {
		t.Fatalf("after PATCH: %+v", got)
	}
	if st := chat("other-model"); st != http.StatusForbidden {
		t.Errorf("a model the key no longer allows: %d, want 403", st)
	}
	if st := chat("test-model"); st != http.StatusOK {
		t.Errorf("the model it allows: %d", st)
	}

	// Only what is given changes; null clears the expiry.
	got.Expiry = nil
	if st := admin(t, "PATCH", "/aitoken/keys/"+k.ID, `{"rpm":5,"expires_at":null}`, &got); st != http.StatusOK {
		t.Fatalf("second PATCH: %d", st)
	}
	if got.Name != "ci" || got.RPM != 5 || got.Expiry != nil || len(got.Models) != 1 {
		t.Fatalf("after the second PATCH: %+v", got)
	}
	// An address the key is not allowed from.
	if st := admin(t, "PATCH", "/aitoken/keys/"+k.ID, `{"allowed_ips":["10.9.9.0/24"]}`, &got); st != http.StatusOK {
		t.Fatalf("allowed_ips PATCH: %d", st)
	}
	if st := chat("test-model"); st != http.StatusForbidden {
		t.Errorf("from an address outside allowed_ips: %d, want 403", st)
	}

	for _, tc := range []struct{ body, field string }{
		{`{"models":["no-such-model"]}`, "models"},
		{`{"rpm":-1}`, "rpm"},
		{`{"allowed_ips":["300.1.1.1"]}`, "allowed_ips"},
		{`{"expires_at":"2001-01-01T00:00:00Z"}`, "expires_at"},
		{`{"expires_at":"soon"}`, "expires_at"},
		{`{"user":"someone-else"}`, "user"},
	} {
		var e struct {
			Error string `json:"error"`
		}
		if st := admin(t, "PATCH", "/aitoken/keys/"+k.ID, tc.body, &e); st != http.StatusBadRequest || !strings.HasPrefix(e.Error, tc.field) {
			t.Errorf("PATCH %s: %d %q, want 400 naming %s", tc.body, st, e.Error, tc.field)
		}
	}
	if st := admin(t, "PATCH", "/aitoken/keys/key_nope", `{"rpm":1}`, nil); st != http.StatusNotFound {
		t.Errorf("unknown key: %d, want 404", st)
	}
	if st := admin(t, "DELETE", "/aitoken/keys/"+k.ID, "", nil); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}
	if st := admin(t, "PATCH", "/aitoken/keys/"+k.ID, `{"allowed_ips":[]}`, nil); st != http.StatusConflict {
		t.Errorf("PATCH of a revoked key: %d, want 409", st)
	}
	if st := chat("test-model"); st != http.StatusUnauthorized {
		t.Errorf("revoked key after a refused PATCH: %d, want 401", st)
	}
}

// caddy aitoken keys create --allowed-ips and keys update send what the
// flags say, and only that.
func TestKeyUpdateCLI(t *testing.T) {
	gateway(t)
	u, _ := newAccount(t, "", "")
	addr := strings.TrimPrefix(adminURL, "http://")
	out, err := caddymodule.RunCLI(t, "keys", "create", u.ID, "--allowed-ips", "10.0.0.0/8,192.168.1.7", "--address", addr, "--json")
	var k struct {
		ID  string   `json:"id"`
		IPs []string `json:"allowed_ips"`
		RPM int64    `json:"rpm"`
	}
	if err != nil || json.Unmarshal([]byte(out), &k) != nil || len(k.IPs) != 2 {
		t.Fatalf("keys create --allowed-ips: %v %s", err, out)
	}
	out, err = caddymodule.RunCLI(t, "keys", "update", k.ID, "--rpm", "7", "--allowed-ips", "", "--address", addr, "--json")
	if err != nil || json.Unmarshal([]byte(out), &k) != nil || k.RPM != 7 {
		t.Fatalf("keys update: %v %s", err, out)
	}
	var after struct {
		IPs []string `json:"allowed_ips"`
	}
	if json.Unmarshal([]byte(out), &after); len(after.IPs) != 0 {
		t.Fatalf("--allowed-ips \"\" should allow any address: %s", out)
	}
	// Without --json: a table, and "field  value" lines for one object.
	if out, err := caddymodule.RunCLI(t, "keys", "list", u.ID, "--address", addr); err != nil ||
		!strings.Contains(out, "ALLOWED IPS") || !strings.Contains(out, k.ID) {
		t.Fatalf("keys list: %v\n%s", err, out)
	}
	if out, err := caddymodule.RunCLI(t, "keys", "update", k.ID, "--name", "cli", "--address", addr); err != nil ||
		!regexp.MustCompile(`(?m)^name +cli$`).MatchString(out) || !regexp.MustCompile(`(?m)^rpm +7$`).MatchString(out) {
		t.Fatalf("keys update: %v\n%s", err, out)
	}
	if _, err := caddymodule.RunCLI(t, "keys", "update", k.ID, "--address", addr); err == nil {
		t.Fatal("keys update with no flag: no error")
	}
	if _, err := caddymodule.RunCLI(t, "keys", "update", k.ID, "--rpm", "-3", "--address", addr); err == nil {
		t.Fatal("keys update --rpm -3: no error")
	}
}
