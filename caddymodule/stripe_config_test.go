package caddymodule

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

func TestStripeBlock(t *testing.T) {
	d := caddyfile.NewTestDispenser(`aitoken {
		stripe {
			secret_key     {env.AITOKEN_T_KEY}
			webhook_secret {file.AITOKEN_T_WHSEC}
			success_url    https://example.com/done?session_id={CHECKOUT_SESSION_ID}
			cancel_url     https://example.com/cancel
			min_topup      5.00
			max_topup      2500.50
			topup_rate     20 30m
			api_base       http://127.0.0.1:12111
		}
	}`)
	var a App
	if err := a.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	s := a.Stripe
	if s == nil || s.SecretKey != "{env.AITOKEN_T_KEY}" || s.WebhookSecret != "{file.AITOKEN_T_WHSEC}" ||
		s.SuccessURL != "https://example.com/done?session_id={CHECKOUT_SESSION_ID}" ||
		s.MinTopup != 5*money.NanosPerUnit || s.APIBase != "http://127.0.0.1:12111" ||
		s.MaxTopup != 2500_500_000_000 || s.TopupRate == nil || s.TopupRate.Sessions != 20 ||
		time.Duration(s.TopupRate.Window) != 30*time.Minute {
		t.Fatalf("stripe block read as %+v", s)
	}
	if n, win := s.topupLimit(); n != 20 || win != 30*time.Minute {
		t.Fatalf("topup limit %d per %s", n, win)
	}
	for src, want := range map[string]int{"topup_rate 4": 4, "topup_rate off": 0} {
		var a App
		if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("aitoken {\nstripe {\n" + src + "\n}\n}")); err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if n, win := a.Stripe.topupLimit(); n != want || win != time.Hour {
			t.Errorf("%s: %d per %s", src, n, win)
		}
	}

	for _, bad := range []string{
		"stripe {\nmin_topup 0\n}",
		"stripe {\nmin_topup 5,00\n}",
		"stripe {\nsecret_key\n}",
		"stripe {\nsecret_key a b\n}",
		"stripe {\nunknown x\n}",
		"stripe {\nmax_topup -1\n}",
		"stripe {\nmax_topup 1e9\n}",
		"stripe {\ntopup_rate\n}",
		"stripe {\ntopup_rate 0\n}",
		"stripe {\ntopup_rate ten\n}",
		"stripe {\ntopup_rate 10 1ms\n}",
		"stripe {\ntopup_rate 10 1h extra\n}",
		"stripe extra {\n}",
	} {
		var a App
		if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("aitoken {\n" + bad + "\n}")); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestStripeProvision(t *testing.T) {
	t.Setenv("AITOKEN_T_KEY", "sk_test_x")
	t.Setenv("AITOKEN_T_WHSEC", "whsec_x")
	c := &StripeConfig{SecretKey: "{env.AITOKEN_T_KEY}", WebhookSecret: "{env.AITOKEN_T_WHSEC}",
		SuccessURL: "https://example.com/done?session_id={CHECKOUT_SESSION_ID}"}
	if err := c.provision(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	if c.secretKey != "sk_test_x" || c.webhookSecret != "whsec_x" || c.api == nil || c.MinTopup != money.NanosPerUnit ||
		c.MaxTopup != 10_000*money.NanosPerUnit {
		t.Fatalf("provisioned %+v", c)
	}
	if c.SecretKey != "{env.AITOKEN_T_KEY}" {
		t.Fatal("the secret was written into the config")
	}
	for name, c := range map[string]*StripeConfig{
		"unset env":      {SecretKey: "{env.AITOKEN_T_UNSET}", SuccessURL: "https://example.com/"},
		"no success url": {SecretKey: "{env.AITOKEN_T_KEY}"},
		"relative url":   {SecretKey: "{env.AITOKEN_T_KEY}", SuccessURL: "/done"},
		"max below min": {SecretKey: "{env.AITOKEN_T_KEY}", SuccessURL: "https://example.com/",
			MinTopup: 50 * money.NanosPerUnit, MaxTopup: 20 * money.NanosPerUnit},
		"max out of range": {SecretKey: "{env.AITOKEN_T_KEY}", SuccessURL: "https://example.com/",
			MaxTopup: money.MaxNanos + 1},
		"window too short": {SecretKey: "{env.AITOKEN_T_KEY}", SuccessURL: "https://example.com/",
			TopupRate: &TopupRate{Sessions: 1, Window: caddy.Duration(time.Millisecond)}},
	} {
		if err := c.provision(zap.NewNop()); err == nil || !strings.Contains(err.Error(), "stripe") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Without a secret key there are no top-ups, and nothing more is needed.
	c = &StripeConfig{WebhookSecret: "{env.AITOKEN_T_WHSEC}"}
	if err := c.provision(zap.NewNop()); err != nil || c.api != nil {
		t.Fatalf("webhook only: %v", err)
	}
}
