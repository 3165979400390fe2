package caddymodule_test

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/caddymodule"
)

// Redis wiped (its data lost): the ledger still knows everything, and
// `caddy aitoken reconcile --apply` restores every balance and key.
func TestReconcileRebuildsWipedRedis(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "5.00", "")
	_, revoked := newAccount(t, "1.00", "")
	admin(t, "DELETE", "/aitoken/keys/"+revoked.ID, "", nil)
	if resp, _ := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model"}`); resp.StatusCode != 200 {
		t.Fatalf("before wipe: %d", resp.StatusCode)
	}
	waitUsage(t, u.ID, 1)
	want := getUser(t, u.ID).Balance

	// A key this node has not seen: the one above may be served from the
	// node's memory (its record and lease) for up to a minute after a
	// wipe that sent no notice, as FLUSHALL sends none.
	_, unseen := newAccount(t, "1.00", "")

	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr})
	defer rdb.Close()
	if err := rdb.FlushAll(context.Background()).Err(); err != nil { // our own test server
		t.Fatal(err)
	}
	resp, body := post(t, "/v1/chat/completions", unseen.Key, `{"model":"test-model"}`)
	apiErr(t, resp, body, 401, "invalid_api_key")

	addr := strings.TrimPrefix(adminURL, "http://")
	out, err := caddymodule.RunCLI(t, "reconcile", "--address", addr, "--json")
	if err != nil {
		t.Fatalf("reconcile: %v %s", err, out)
	}
	var rep struct {
		InSync   bool `json:"in_sync"`
		Accounts []struct {
			User    string `json:"user"`
			Ledger  string `json:"ledger"`
			Missing bool   `json:"missing"`
		} `json:"accounts"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	found := false
	for _, a := range rep.Accounts {
		if a.User == u.ID {
			found = a.Missing && a.Ledger == want
		}
	}
	if rep.InSync || !found {
		t.Fatalf("dry run did not report the lost account: %s", out)
	}
	if resp, _ := post(t, "/v1/chat/completions", unseen.Key, `{"model":"test-model"}`); resp.StatusCode != 401 {
		t.Fatal("a dry run changed redis")
	}

	out, err = caddymodule.RunCLI(t, "reconcile", "--apply", "--address", addr)
	if err != nil || !strings.Contains(out, "differed (fixed)") {
		t.Fatalf("apply: %v %s", err, out)
	}
	if got := getUser(t, u.ID).Balance; got != want {
		t.Fatalf("balance after rebuild %s, want %s", got, want)
	}
	resp, body = post(t, "/v1/chat/completions", revoked.Key, `{"model":"test-model"}`)
	apiErr(t, resp, body, 401, "invalid_api_key")
	if resp, _ := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model"}`); resp.StatusCode != 200 {
		t.Fatalf("traffic did not resume: %d", resp.StatusCode)
	}
	waitUsage(t, u.ID, 2)
	out, err = caddymodule.RunCLI(t, "reconcile", "--address", addr)
	if err != nil || !strings.Contains(out, "ledger and redis agree") {
		t.Fatalf("second reconcile: %v %s", err, out)
	}
}

func TestCLIUsersKeysCredit(t *testing.T) {
	gateway(t)
	addr := strings.TrimPrefix(adminURL, "http://")
	out, err := caddymodule.RunCLI(t, "users", "create", "--email", "cli@example.com", "--address", addr, "--json")
	if err != nil {
		t.Fatal(err, out)
	}
	var u userResp
	json.Unmarshal([]byte(out), &u)
	if out, err := caddymodule.RunCLI(t, "credit", u.ID, "2.50", "--address", addr); err != nil || !regexp.MustCompile(`(?m)^balance +2\.500000000$`).MatchString(out) {
		t.Fatalf("credit: %v %s", err, out)
	}
	if _, err := caddymodule.RunCLI(t, "credit", u.ID, "abc", "--address", addr); err == nil {
		t.Fatal("bad amount accepted")
	}
	out, err = caddymodule.RunCLI(t, "keys", "create", u.ID, "--rpm", "10", "--address", addr, "--json")
	var k keyResp
	if err != nil || json.Unmarshal([]byte(out), &k) != nil || !strings.HasPrefix(k.Key, "sk-ait-") {
		t.Fatalf("keys create: %v %s", err, out)
	}
	if out, err := caddymodule.RunCLI(t, "keys", "list", u.ID, "--address", addr); err != nil || strings.Contains(out, k.Key) || !strings.Contains(out, k.ID) {
		t.Fatalf("keys list: %v %s", err, out)
	}
	post(t, "/v1/chat/completions", k.Key, `{"model":"test-model"}`)
	waitUsage(t, u.ID, 1)
	if out, err := caddymodule.RunCLI(t, "usage", "--user", u.ID, "--address", addr); err != nil || !strings.Contains(out, "test-model") || !strings.Contains(out, "OUTCOME") {
		t.Fatalf("usage: %v %s", err, out)
	}
	if out, err := caddymodule.RunCLI(t, "keys", "revoke", k.ID, "--address", addr); err != nil {
		t.Fatalf("revoke: %v %s", err, out)
	}
	if _, err := caddymodule.RunCLI(t, "users", "show", "nobody-here", "--address", addr); err == nil {
		t.Fatal("unknown user shown")
	}
}
