package caddymodule_test

import (
	"net/http"
	"strings"
	"testing"
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
