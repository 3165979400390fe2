package caddymodule_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/cnaitoken/caddy-aitoken/internal/freeport"
)

// A paid top-up for a user erased through DELETE /aitoken/users/{id}, or
// for a user that never existed, is recorded as unapplied and credited to
// nobody; Stripe gets 200 (redeliveries are duplicates, a later event of
// the session adds nothing); each is alerted once by an ERROR log line
// naming the event and payment (no secret) and by
// aitoken_stripe_events_total{result="unapplied"}.
func TestStripeUnappliedPayments(t *testing.T) {
	dir := t.TempDir()
	accessLog, caddyLog := filepath.Join(dir, "access.log"), filepath.Join(dir, "caddy.log")
	tc := caddytest.NewTester(t)
	startOnce.Lock()
	load(tc, loggedConfig(accessLog, caddyLog, env.upstream.URL, fmt.Sprintf("127.0.0.1:%d", freeport.Must())))
	startOnce.Unlock()
	t.Cleanup(func() {
		startOnce.Lock()
		defer startOnce.Unlock()
		load(tc, config("50ms"))
	})

	erased, _ := newAccount(t, "1.00", "")
	var e struct {
		KeysRevoked int `json:"keys_revoked"`
	}
	if st := admin(t, "DELETE", "/aitoken/users/"+erased.ID, "", &e); st != http.StatusOK || e.KeysRevoked != 1 {
		t.Fatalf("erase: %d %+v", st, e)
	}
	balance := getUser(t, erased.ID).Balance
	never := uniq("u_never")
	before := scrape(t)

	csErased, csNever := uniq("cs"), uniq("cs")
	evErased := stripeEvent("", "checkout.session.completed", "", sessionObject(csErased, erased.ID, "paid", 2000, "usd"))
	deliver(t, evErased, "unapplied")
	if st, out := sendEvent(t, evErased, testWebhookSecret, time.Time{}); st != http.StatusOK || out["duplicate"] != true {
		t.Fatalf("redelivery: %d %v", st, out)
	}
	deliver(t, stripeEvent("", "checkout.session.async_payment_succeeded", "", sessionObject(csErased, erased.ID, "paid", 2000, "usd")),
		"already_unapplied")
	deliver(t, stripeEvent("", "checkout.session.completed", "", sessionObject(csNever, never, "paid", 1500, "usd")), "unapplied")

	after := scrape(t)
	const name = "aitoken_stripe_events_total"
	labels := []string{"type=checkout.session.completed", "result=unapplied"}
	if d := metric(after, name, labels...) - metric(before, name, labels...); d != 2 {
		t.Errorf("unapplied events counted %v times, want 2", d)
	}

	if got := getUser(t, erased.ID).Balance; got != balance {
		t.Errorf("erased user's balance %s, was %s", got, balance)
	}
	for user, cs := range map[string]string{erased.ID: csErased, never: csNever} {
		ps := payments(t, user)
		if p := ps["topup:"+cs]; len(ps) != 1 || p.Status != "unapplied" || p.Credited != "0.000000000" || p.User != user {
			t.Errorf("payments of %s: %+v", user, ps)
		}
	}
	if doc, _ := export(t, erased.ID); doc.LedgerBalance != "1.000000000" || len(doc.Ledger) != 1 {
		t.Errorf("erased user's ledger: balance %s, entries %v", doc.LedgerBalance, doc.Ledger)
	}

	// One ERROR line per unapplied payment, naming event and payment.
	f, err := os.Open(caddyLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	alerts := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, secret := range []string{testWebhookSecret, testStripeKey} {
			if strings.Contains(line, secret) {
				t.Errorf("a log line holds a Stripe secret: %s", line)
			}
		}
		var l struct {
			Level, Msg, Event, Payment, Reason string
		}
		if json.Unmarshal([]byte(line), &l) != nil || !strings.Contains(l.Msg, "unapplied") {
			continue
		}
		if l.Level != "error" || l.Event == "" {
			t.Errorf("unapplied payment logged as %s", line)
			continue
		}
		alerts[l.Payment] = l.Reason
	}
	if len(alerts) != 2 || alerts["topup:"+csErased] != "erased_user" || alerts["topup:"+csNever] != "unknown_user" {
		t.Errorf("unapplied alerts %v, want one each for %s (erased_user) and %s (unknown_user)", alerts, csErased, csNever)
	}
}
