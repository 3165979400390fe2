package caddymodule_test

import (
	"context"
	"database/sql"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// Two admin credits of 9,000,000,000 used to overflow the ledger: the second
// was written to SQLite though Redis refused it, and reconcile, export and
// the next start failed on SQLite's SUM. Every amount is bounded now (the
// largest balance is 9007199.254740991, the range Redis compares exactly)
// and checked before anything is written: refused credits leave no trace,
// and reconcile and export keep working.
func TestAdminCreditBounds(t *testing.T) {
	gateway(t)
	u, _ := newAccount(t, "", "")
	credit := func(amount string) (int, string, string) {
		t.Helper()
		var e struct {
			Error string `json:"error"`
		}
		st := admin(t, "POST", "/aitoken/users/"+u.ID+"/credits", `{"amount":"`+amount+`"}`, &e)
		field, _, _ := strings.Cut(e.Error, " ") // the field the message names first
		return st, field, e.Error
	}
	const want = "amount out of range: the largest balance is 9007199.254740991"
	for range 2 {
		if st, field, msg := credit("9000000000"); st != http.StatusBadRequest || field != "amount" || !strings.Contains(msg, want) {
			t.Fatalf("credit of 9000000000: %d %q %q", st, field, msg)
		}
	}
	if got := getUser(t, u.ID); got.Balance != "0.000000000" {
		t.Fatalf("balance after refused credits: %s", got.Balance)
	}
	// In range alone, out of range together: the second is refused whole.
	if st, _, msg := credit("9000000"); st != http.StatusOK {
		t.Fatalf("credit of 9000000: %d %s", st, msg)
	}
	if st, field, msg := credit("9000000"); st != http.StatusBadRequest || field != "amount" || !strings.Contains(msg, want) {
		t.Fatalf("second credit of 9000000: %d %q %q", st, field, msg)
	}
	if got := getUser(t, u.ID); got.Balance != "9000000.000000000" {
		t.Fatalf("balance: %s", got.Balance)
	}
	doc, _ := export(t, u.ID)
	if len(doc.Ledger) != 1 || doc.LedgerBalance != "9000000.000000000" {
		t.Fatalf("export: ledger %v, balance %s", doc.Ledger, doc.LedgerBalance)
	}
	var rep struct {
		Accounts []struct {
			User string `json:"user"`
		} `json:"accounts"`
	}
	if st := admin(t, "POST", "/aitoken/reconcile", "", &rep); st != http.StatusOK {
		t.Fatalf("reconcile: %d", st)
	}
	for _, a := range rep.Accounts {
		if a.User == u.ID {
			t.Fatalf("reconcile found the account out of sync: %+v", rep)
		}
	}
}

// An erased user's account is closed: the admin API refuses to credit or
// debit it (409: the user still exists, as deleted, and its state forbids
// the change), and nothing reaches the ledger or Redis.
func TestAdminCreditErasedUser(t *testing.T) {
	gateway(t)
	u, _ := newAccount(t, "3.00", "")
	if st := admin(t, "DELETE", "/aitoken/users/"+u.ID, "", nil); st != http.StatusOK {
		t.Fatalf("erase: %d", st)
	}
	for _, amount := range []string{"5.00", "-1.00"} {
		var e struct {
			Error string `json:"error"`
		}
		st := admin(t, "POST", "/aitoken/users/"+u.ID+"/credits", `{"amount":"`+amount+`"}`, &e)
		if st != http.StatusConflict || !strings.Contains(e.Error, "deleted") {
			t.Fatalf("credit of %s to an erased user: %d %q", amount, st, e.Error)
		}
	}
	if got := getUser(t, u.ID); got.Balance != "3.000000000" {
		t.Fatalf("balance: %s", got.Balance)
	}
	if doc, _ := export(t, u.ID); len(doc.Ledger) != 1 {
		t.Fatalf("ledger: %v", doc.Ledger)
	}
}

// A ledger written before amounts were bounded (two credits of
// 9,000,000,000 to one user, whose sum SQLite's SUM cannot add) no longer
// stops the gateway: Caddy starts on it with a Redis that lost its data,
// seeding that user's balance clamped to the range, and serves requests;
// reconcile reports the account with its exact ledger balance, and the
// user's export states it.
func TestStartOnOverflowedLedger(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	store, err := usagelog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const whale, small = "u_overflowwhale", "u_overflowsmall"
	for _, id := range []string{whale, small} {
		if _, err := store.CreateUser(ctx, usagelog.User{ID: id, Email: id + "@example.com"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.AddLedgerEntry(ctx, small, 2*money.NanosPerUnit, "credit", "", ""); err != nil {
		t.Fatal(err)
	}
	store.Close()
	// What the admin API let through before amounts were bounded, written
	// as it was then.
	db, err := sql.Open("sqlite", path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := db.ExecContext(ctx, `INSERT INTO ledger (user_id, amount, kind, created_at) VALUES (?, ?, 'credit', 0)`,
			whale, int64(9_000_000_000*money.NanosPerUnit)); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	// A Redis without data: the start seeds it from this ledger.
	rs := testredis.Start(t)
	cfg := config("50ms")
	for _, r := range [][2]string{{env.redis.URL(), rs.URL()}, {filepath.Join(env.dir, "ledger.db"), path},
		{spoolDir(), filepath.Join(dir, "spool")}} {
		if !strings.Contains(cfg, r[0]) {
			t.Fatalf("the test config has no %q; update bounds_test.go", r[0])
		}
		cfg = strings.ReplaceAll(cfg, r[0], r[1])
	}
	tc := caddytest.NewTester(t)
	startOnce.Lock()
	load(tc, cfg)
	startOnce.Unlock()
	t.Cleanup(func() {
		startOnce.Lock()
		defer startOnce.Unlock()
		load(tc, config("50ms"))
	})
	if t.Failed() {
		t.Fatal("Caddy did not start on the overflowed ledger")
	}

	if got := getUser(t, whale); got.Balance != "9007199.254740991" {
		t.Fatalf("%s: balance %s, want the largest, 9007199.254740991", whale, got.Balance)
	}
	if got := getUser(t, small); got.Balance != "2.000000000" {
		t.Fatalf("%s: balance %s, want 2.000000000", small, got.Balance)
	}
	var k keyResp
	if st := admin(t, "POST", "/aitoken/keys", `{"user":"`+small+`"}`, &k); st != http.StatusCreated {
		t.Fatalf("create key: %d", st)
	}
	if resp, b := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("a request on the overflowed ledger: %d %s", resp.StatusCode, b)
	}
	waitUsage(t, small, 1)
	if st := admin(t, "GET", "/aitoken/users?limit=10", "", nil); st != http.StatusOK {
		t.Fatalf("users list: %d", st)
	}

	var rep struct {
		Accounts []struct {
			User             string `json:"user"`
			Ledger           string `json:"ledger"`
			LedgerOutOfRange string `json:"ledger_out_of_range"`
		} `json:"accounts"`
	}
	if st := admin(t, "POST", "/aitoken/reconcile", "", &rep); st != http.StatusOK {
		t.Fatalf("reconcile: %d", st)
	}
	if len(rep.Accounts) != 1 || rep.Accounts[0].User != whale || rep.Accounts[0].Ledger != "9007199.254740991" ||
		rep.Accounts[0].LedgerOutOfRange != "18000000000.000000000" {
		t.Fatalf("reconcile: %+v, want only %s, out of range at 18000000000.000000000", rep.Accounts, whale)
	}
	doc, raw := export(t, whale)
	if len(doc.Ledger) != 2 || doc.LedgerBalance != "9007199.254740991" ||
		!strings.Contains(raw, `"ledger_balance_exact":"18000000000.000000000"`) {
		t.Fatalf("export: ledger %v, balance %s: %.400s", doc.Ledger, doc.LedgerBalance, raw)
	}
}
