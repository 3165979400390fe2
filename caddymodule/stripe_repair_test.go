package caddymodule

import (
	"bytes"
	"database/sql"
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
// Redis credit but before the entry was marked applied. Redis unreachable
// when the event arrives is the first case: the event is recorded and
// answered 200.
func TestStripeCrashRepairedOnce(t *testing.T) {
	ctx := t.Context()
	dbPath := filepath.Join(t.TempDir(), "ledger.db")
	store, err := usagelog.Open(dbPath)
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
	// The crashes are real faults: Redis unreachable when the event
	// arrives, and a ledger that refuses to mark entries applied.
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1, DialTimeout: 100 * time.Millisecond})
	defer down.Close()
	repair := func() int {
		t.Helper()
		n, err := app.books().RepairCredits(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Crash after the commit, before Redis (Redis unreachable): the ledger
	// has it, Redis not; answered 200 all the same.
	app.accounts = billing.NewAccounts(down)
	deliver("evt_crash_1", "cs_crash_1", 2000)
	deliver("evt_crash_1", "cs_crash_1", 2000) // Stripe's retry is a duplicate
	app.accounts = accounts
	if b, p := balance(), pending(); b != 0 || p != 1 {
		t.Fatalf("after the crash: balance %s, %d pending; want 0, 1", b, p)
	}
	if bal, _ := store.LedgerBalance(ctx, u.ID); bal != 20*money.NanosPerUnit {
		t.Fatalf("ledger balance %s", bal)
	}
	for i := range 2 { // the restart's repair, then another pass
		repair()
		if b, p := balance(), pending(); b != 20*money.NanosPerUnit || p != 0 {
			t.Fatalf("repair pass %d: balance %s, %d pending", i+1, b, p)
		}
	}

	// Crash after Redis, before the entry is marked applied.
	db, err := sql.Open("sqlite", dbPath+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TRIGGER crash_at_mark BEFORE UPDATE OF redis_applied ON ledger
		BEGIN SELECT RAISE(ABORT, 'crash at mark'); END`); err != nil {
		t.Fatal(err)
	}
	deliver("evt_crash_2", "cs_crash_2", 1000)
	if b, p := balance(), pending(); b != 30*money.NanosPerUnit || p != 1 {
		t.Fatalf("after the second crash: balance %s, %d pending", b, p)
	}
	if _, err := db.ExecContext(ctx, `DROP TRIGGER crash_at_mark`); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if n, want := repair(), 1-i; n != want {
			t.Fatalf("repair pass %d handled %d entries, want %d", i+1, n, want)
		}
		if b, p := balance(), pending(); b != 30*money.NanosPerUnit || p != 0 {
			t.Fatalf("repair pass %d: balance %s, %d pending", i+1, b, p)
		}
	}

	// A ledger that cannot take the event answers 500, so Stripe retries.
	store.Close()
	if code := send("evt_closed", "cs_closed", 100); code != http.StatusInternalServerError {
		t.Fatalf("event with the ledger closed: %d, want 500", code)
	}
}
