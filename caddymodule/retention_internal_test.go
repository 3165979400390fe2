package caddymodule

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// InjectBilledUsage stores recs in the running gateway's ledger as if they
// had been billed: each user's Redis balance is debited by their cost too,
// so the ledger and Redis keep agreeing. Retention tests use it for rows
// older than any request a test can make.
func InjectBilledUsage(t *testing.T, recs []usagelog.Record) {
	t.Helper()
	app := activeApp.Load()
	if app == nil || app.ledger == nil {
		t.Fatal("no running aitoken app with a ledger")
	}
	ctx := context.Background()
	if _, err := app.ledger.store.InsertUsage(ctx, recs); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if _, err := app.accounts.Credit(ctx, r.User, -r.Cost); err != nil {
			t.Fatal(err)
		}
	}
}

// RunRetention runs the running gateway's retention job once as if its
// clock read now.
func RunRetention(t *testing.T, now time.Time) usagelog.PurgeResult {
	t.Helper()
	app := activeApp.Load()
	if app == nil || app.ledger == nil {
		t.Fatal("no running aitoken app with a ledger")
	}
	j := app.retentionJob()
	j.now = func() time.Time { return now }
	j.last = new(retentionLast)
	res, ran, err := j.tick(context.Background())
	if err != nil || !ran {
		t.Fatalf("retention: ran %v, %v", ran, err)
	}
	return res
}

// fakeClock drives a retentionJob: now is set by the test, and every timer
// the job asks for is reported on asked and fires when the test says.
type fakeClock struct {
	now   time.Time
	asked chan time.Duration
	fire  chan time.Time
}

func (c *fakeClock) after(d time.Duration) <-chan time.Time {
	c.asked <- d
	return c.fire
}

func TestRetentionJobRunsDailyOnItsClock(t *testing.T) {
	ctx := context.Background()
	store, err := usagelog.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := store.CreateUser(ctx, usagelog.User{ID: "u"}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.AddLedgerEntry(ctx, "u", money.Nanos(5e9), "credit", "", ""); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	row := func(id string, at time.Time) usagelog.Record {
		return usagelog.Record{RequestID: id, Time: at, User: "u", Cost: 1000, ClientIP: "192.0.2.1"}
	}
	if _, err := store.InsertUsage(ctx, []usagelog.Record{
		row("old", t0.Add(-31*24*time.Hour)), row("day30", t0.Add(-30*24*time.Hour+time.Hour)), row("new", t0),
	}); err != nil {
		t.Fatal(err)
	}
	bal, _ := store.LedgerBalance(ctx, "u")

	clk := &fakeClock{now: t0, asked: make(chan time.Duration), fire: make(chan time.Time)}
	j := &retentionJob{store: store, usage: 30 * 24 * time.Hour, payments: 2555 * 24 * time.Hour,
		now: func() time.Time { return clk.now }, after: clk.after, last: new(retentionLast), log: zap.NewNop()}
	jobCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { runRetention(jobCtx, j); close(done) }()
	left := func() int {
		recs, err := store.ListUsage(ctx, usagelog.UsageQuery{User: "u"})
		if err != nil {
			t.Fatal(err)
		}
		return len(recs)
	}
	// step fires the pending timer at clock time now, and returns once the
	// job asks for its next timer, that is, once the tick is done.
	step := func(now time.Time, wantWait time.Duration) {
		t.Helper()
		clk.now = now
		clk.fire <- now
		if d := <-clk.asked; d != wantWait {
			t.Fatalf("next wait %s, want %s", d, wantWait)
		}
	}
	if d := <-clk.asked; d != retentionFirst {
		t.Fatalf("first wait %s, want %s", d, retentionFirst)
	}
	step(t0, retentionTick)
	if n := left(); n != 2 {
		t.Fatalf("after the first run %d rows left, want 2", n)
	}
	// An hour later the row of day 30 is past its age, but the job
	// deletes once a day.
	step(t0.Add(2*time.Hour), retentionTick)
	if n := left(); n != 2 {
		t.Fatalf("a second run within a day: %d rows left", n)
	}
	step(t0.Add(24*time.Hour), retentionTick)
	if n := left(); n != 1 {
		t.Fatalf("a day later %d rows left, want 1", n)
	}
	if got, _ := store.LedgerBalance(ctx, "u"); got != bal {
		t.Fatalf("balance %s, want %s", got, bal)
	}
	stop()
	<-done
}

func TestPrivacyOptionsCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		in               string
		usage, payments  time.Duration
		keepIP, parseErr bool
	}{
		{in: `aitoken`, keepIP: true},
		{in: "aitoken {\n usage_retention 30d\n payment_retention 2555d\n log_client_ip off\n}",
			usage: 30 * 24 * time.Hour, payments: 2555 * 24 * time.Hour},
		{in: "aitoken {\n usage_retention 8760h\n log_client_ip on\n}", usage: 8760 * time.Hour, keepIP: true},
		{in: "aitoken {\n usage_retention 1h\n}", parseErr: true},
		{in: "aitoken {\n usage_retention -5d\n}", parseErr: true},
		{in: "aitoken {\n payment_retention forever\n}", parseErr: true},
		{in: "aitoken {\n payment_retention\n}", parseErr: true},
		{in: "aitoken {\n log_client_ip maybe\n}", parseErr: true},
	} {
		a := new(App)
		err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if tc.parseErr {
			if err == nil {
				t.Errorf("%q: no error", tc.in)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if time.Duration(a.UsageRetention) != tc.usage || time.Duration(a.PaymentRetention) != tc.payments || a.keepClientIP() != tc.keepIP {
			t.Errorf("%q: usage %s payments %s keep ip %v", tc.in, time.Duration(a.UsageRetention),
				time.Duration(a.PaymentRetention), a.keepClientIP())
		}
	}
}

func TestPrivacyOptionsJSON(t *testing.T) {
	var a App
	if err := json.Unmarshal([]byte(`{"usage_retention":"90d","payment_retention":"2555d","log_client_ip":false}`), &a); err != nil {
		t.Fatal(err)
	}
	if time.Duration(a.UsageRetention) != 90*24*time.Hour || a.keepClientIP() {
		t.Fatalf("usage %s, keep ip %v", time.Duration(a.UsageRetention), a.keepClientIP())
	}
	a.Currency = "USD"
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	a.PaymentRetention = caddy.Duration(time.Minute)
	if err := a.Validate(); err == nil || !strings.Contains(err.Error(), "payment_retention") {
		t.Fatalf("a minute of payment retention: %v", err)
	}
	// A top-up's records must outlive the time its card disputes and
	// refunds can arrive, or they could no longer be clawed back.
	a.PaymentRetention = caddy.Duration(179 * 24 * time.Hour)
	if err := a.Validate(); err == nil || !strings.Contains(err.Error(), "payment_retention") || !strings.Contains(err.Error(), "180d") {
		t.Fatalf("179 days of payment retention: %v", err)
	}
	a.PaymentRetention = caddy.Duration(180 * 24 * time.Hour)
	if err := a.Validate(); err != nil {
		t.Fatalf("180 days of payment retention: %v", err)
	}
}
