package caddymodule

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stripe/stripe-go/v76/webhook"
	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// A crash between the ledger commit and the Redis credit is repaired
// exactly once by the repair pass run at start; so is a crash after the
// Redis credit but before the entry was marked applied.
func TestStripeCrashRepairedOnce(t *testing.T) {
	ctx := t.Context()
	store, err := usagelog.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	srv := testredis.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	accounts := billing.NewAccounts(rdb)
	u, err := store.CreateUser(ctx, usagelog.User{})
	if err != nil {
		t.Fatal(err)
	}
	if err := accounts.EnsureAccount(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	const secret = "whsec_repair"
	var send func(eventID, session string, amount int64) int
	ledger := &ledgerConn{store: store}
	ledger.ready.Store(true) // started: the store is open
	app := &App{Currency: "USD", accounts: accounts, ledger: ledger, log: zap.NewNop(), inflight: new(tracker)}
	h := &StripeWebhook{app: app, log: zap.NewNop(), cfg: &StripeConfig{webhookSecret: secret}}

	deliver := func(eventID, session string, amount int64) {
		t.Helper()
		if code := send(eventID, session, amount); code != http.StatusOK {
			t.Fatalf("deliver %s: %d", eventID, code)
		}
	}
	send = func(eventID, session string, amount int64) int {
		t.Helper()
		body := fmt.Sprintf(`{"id":%q,"object":"event","api_version":"2023-10-16","created":%d,
			"type":"checkout.session.completed","data":{"object":{"id":%q,"object":"checkout.session",
			"mode":"payment","payment_status":"paid","client_reference_id":%q,"amount_total":%d,
			"currency":"usd","payment_intent":"pi_%s"}}}`, eventID, time.Now().Unix(), session, u.ID, amount, session)
		sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: []byte(body), Secret: secret})
		req := httptest.NewRequest(http.MethodPost, "/stripe/webhook", bytes.NewReader(sp.Payload))
		req.Header.Set("Stripe-Signature", sp.Header)
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, req, nil); err != nil {
			t.Fatal(err)
		}
		return rec.Code
	}
	balance := func() money.Nanos {
		t.Helper()
		b, _, err := accounts.Balance(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pending := func() int {
		t.Helper()
		p, err := store.PendingCredits(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		return len(p)
	}
	crashAt := func(step string) {
		f := func(s string) error {
			if s == step {
				return errors.New("crash at " + s)
			}
			return nil
		}
		stripeCrashHook.Store(&f)
	}
	t.Cleanup(func() { stripeCrashHook.Store(nil) })

	// Crash after the commit, before Redis: the ledger has it, Redis not.
	crashAt("redis")
	deliver("evt_crash_1", "cs_crash_1", 2000)
	deliver("evt_crash_1", "cs_crash_1", 2000) // Stripe's retry is a duplicate
	if b, p := balance(), pending(); b != 0 || p != 1 {
		t.Fatalf("after the crash: balance %s, %d pending; want 0, 1", b, p)
	}
	if bal, _ := store.LedgerBalance(ctx, u.ID); bal != 20*money.NanosPerUnit {
		t.Fatalf("ledger balance %s", bal)
	}
	stripeCrashHook.Store(nil)
	for i := range 2 { // the restart's repair, then another pass
		if _, err := repairCredits(ctx, store, accounts); err != nil {
			t.Fatal(err)
		}
		if b, p := balance(), pending(); b != 20*money.NanosPerUnit || p != 0 {
			t.Fatalf("repair pass %d: balance %s, %d pending", i+1, b, p)
		}
	}

	// Crash after Redis, before the entry is marked applied.
	crashAt("mark")
	deliver("evt_crash_2", "cs_crash_2", 1000)
	if b, p := balance(), pending(); b != 30*money.NanosPerUnit || p != 1 {
		t.Fatalf("after the second crash: balance %s, %d pending", b, p)
	}
	stripeCrashHook.Store(nil)
	for i := range 2 {
		n, err := repairCredits(ctx, store, accounts)
		if err != nil {
			t.Fatal(err)
		}
		if want := 1 - i; n != want {
			t.Fatalf("repair pass %d handled %d entries, want %d", i+1, n, want)
		}
		if b, p := balance(), pending(); b != 30*money.NanosPerUnit || p != 0 {
			t.Fatalf("repair pass %d: balance %s, %d pending", i+1, b, p)
		}
	}

	// Redis unreachable when the event arrives: recorded, answered 200,
	// applied by the next repair pass.
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer down.Close()
	app.accounts = billing.NewAccounts(down)
	deliver("evt_down", "cs_down", 500)
	app.accounts = accounts
	if b, p := balance(), pending(); b != 30*money.NanosPerUnit || p != 1 {
		t.Fatalf("with redis down: balance %s, %d pending", b, p)
	}
	if _, err := repairCredits(ctx, store, accounts); err != nil {
		t.Fatal(err)
	}
	if b, p := balance(), pending(); b != 35*money.NanosPerUnit || p != 0 {
		t.Fatalf("after repair: balance %s, %d pending", b, p)
	}

	// A ledger that cannot take the event answers 500, so Stripe retries.
	store.Close()
	if code := send("evt_closed", "cs_closed", 100); code != http.StatusInternalServerError {
		t.Fatalf("event with the ledger closed: %d, want 500", code)
	}
}

// An entry Redis refuses (the balance would be out of range: Redis and the
// ledger disagree) is left pending and does not stop the repair of the
// entries after it.
func TestStripeRepairSkipsRefusedEntry(t *testing.T) {
	ctx := t.Context()
	store, err := usagelog.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	srv := testredis.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	accounts := billing.NewAccounts(rdb)
	var users []string
	for i := range 2 {
		u, err := store.CreateUser(ctx, usagelog.User{})
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, u.ID)
		if _, _, err := store.StripeEvent(ctx, usagelog.StripeEventInfo{ID: fmt.Sprint("evt_", i)}, func(tx *usagelog.PaymentTx) (string, error) {
			_, err := tx.AddLedger(u.ID, 5*money.NanosPerUnit, "topup", "", fmt.Sprint("credit:", i))
			return "", err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Redis holds a balance for the first user that the ledger does not.
	if err := rdb.HSet(ctx, "ait:{"+users[0]+"}:acct", "balance", int64(money.MaxNanos)-1, "held", 0).Err(); err != nil {
		t.Fatal(err)
	}
	n, err := repairCredits(ctx, store, accounts)
	if err != nil || n != 2 {
		t.Fatalf("repair: %d, %v", n, err)
	}
	if b, _, _ := accounts.Balance(ctx, users[1]); b != 5*money.NanosPerUnit {
		t.Fatalf("the entry after the refused one: balance %s", b)
	}
	p, err := store.PendingCredits(ctx, 0)
	if err != nil || len(p) != 1 || p[0].User != users[0] {
		t.Fatalf("pending after repair: %+v, %v", p, err)
	}
}
