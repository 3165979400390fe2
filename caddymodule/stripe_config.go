package caddymodule

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/stripe/stripe-go/v76"
	checkoutsession "github.com/stripe/stripe-go/v76/checkout/session"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/cnaitoken/caddy-aitoken/accounting"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// StripeConfig configures card top-ups through Stripe Checkout (the
// account API's POST /v1/account/topup) and the webhook that credits them
// (the aitoken_stripe handler).
type StripeConfig struct {
	// SecretKey is the Stripe secret key (sk_live_… or sk_test_…) that
	// creates Checkout Sessions. Give it as an {env.*} or {file.*}
	// placeholder: it is resolved at provision time, so the key never
	// appears in the config or its autosave. Required for top-ups.
	SecretKey string `json:"secret_key,omitempty"`

	// WebhookSecret is the signing secret (whsec_…) of the webhook
	// endpoint; placeholders are resolved like SecretKey's. Required by
	// aitoken_stripe.
	WebhookSecret string `json:"webhook_secret,omitempty"`

	// SuccessURL is where Checkout sends the customer after paying. Stripe's
	// own {CHECKOUT_SESSION_ID} template may appear in it; it is not a Caddy
	// placeholder. Required for top-ups.
	SuccessURL string `json:"success_url,omitempty"`

	// CancelURL is where Checkout sends a customer who goes back.
	CancelURL string `json:"cancel_url,omitempty"`

	// MinTopup is the smallest top-up accepted, in the app's currency.
	// Default: 1.00.
	MinTopup money.Nanos `json:"min_topup,omitempty"`

	// MaxTopup is the largest top-up accepted, in the app's currency; a
	// larger amount is refused (400, param "amount") before Stripe is
	// asked. It must not be below MinTopup. Default: 10000.00 (or
	// MinTopup, if that is larger).
	MaxTopup money.Nanos `json:"max_topup,omitempty"`

	// TopupRate bounds how many top-ups (Checkout Sessions, each also a
	// ledger record) one API key may start in a window; more get 429
	// rate_limit_exceeded with Retry-After. Default: 10 per hour.
	TopupRate *TopupRate `json:"topup_rate,omitempty"`

	// APIBase replaces https://api.stripe.com, for tests against
	// stripe-mock. Placeholders are resolved.
	APIBase string `json:"api_base,omitempty"`

	once          sync.Once
	err           error
	secretKey     string
	webhookSecret string
	api           *checkoutsession.Client // nil without a secret key
}

// TopupRate is a limit on the top-ups one API key starts: at most Sessions
// per Window, counted in Redis in fixed windows that start with a key's
// first top-up.
type TopupRate struct {
	// Sessions is how many top-ups a key may start per window. Default:
	// 10; a negative number turns the limit off.
	Sessions int `json:"sessions,omitempty"`
	// Window is the length of a window, at least one second. Default: 1h.
	Window caddy.Duration `json:"window,omitempty"`
}

// Defaults and bounds of the stripe block.
const (
	defaultMinTopup      = money.NanosPerUnit
	defaultMaxTopup      = 10_000 * money.NanosPerUnit
	defaultTopupSessions = 10
	defaultTopupWindow   = time.Hour
	maxTopupSessions     = 1_000_000
	maxTopupWindow       = 31 * 24 * time.Hour
	stripeAPITimeout     = 30 * time.Second
)

// policy is the top-up policy of the stripe block.
func (c *StripeConfig) policy() accounting.TopupPolicy {
	n, win := c.topupLimit()
	return accounting.TopupPolicy{Min: c.MinTopup, Max: c.MaxTopup, Sessions: n, Window: win,
		SuccessURL: c.SuccessURL, CancelURL: c.CancelURL}
}

// topupLimit returns how many top-ups a key may start per window (0: no
// limit) and the window.
func (c *StripeConfig) topupLimit() (int, time.Duration) {
	n, win := defaultTopupSessions, defaultTopupWindow
	if c.TopupRate != nil {
		if c.TopupRate.Sessions != 0 {
			n = c.TopupRate.Sessions
		}
		if c.TopupRate.Window != 0 {
			win = time.Duration(c.TopupRate.Window)
		}
	}
	return max(n, 0), win
}

// checkLimits validates the top-up bounds and fills their defaults.
func (c *StripeConfig) checkLimits() error {
	if c.MinTopup <= 0 {
		c.MinTopup = defaultMinTopup
	}
	if c.MaxTopup <= 0 {
		c.MaxTopup = max(defaultMaxTopup, c.MinTopup)
	}
	if !c.MinTopup.InRange() || !c.MaxTopup.InRange() {
		return fmt.Errorf("stripe min_topup and max_topup: at most %s", accounting.FormatAmount(money.MaxNanos))
	}
	if c.MaxTopup < c.MinTopup {
		return fmt.Errorf("stripe max_topup %s is below min_topup %s", accounting.FormatAmount(c.MaxTopup), accounting.FormatAmount(c.MinTopup))
	}
	if c.TopupRate != nil {
		if c.TopupRate.Sessions > maxTopupSessions {
			return fmt.Errorf("stripe topup_rate: at most %d top-ups per window", maxTopupSessions)
		}
		if w := time.Duration(c.TopupRate.Window); w != 0 && (w < time.Second || w > maxTopupWindow) {
			return fmt.Errorf("stripe topup_rate window %s: want from 1s to %s", w, maxTopupWindow)
		}
	}
	return nil
}

// provision resolves the secrets and builds the Stripe API client, once per
// config; every handler that needs Stripe calls it.
func (c *StripeConfig) provision(log *zap.Logger) error {
	c.once.Do(func() { c.err = c.doProvision(log) })
	return c.err
}

func (c *StripeConfig) doProvision(log *zap.Logger) error {
	repl := caddy.NewReplacer()
	resolve := func(name, v string) (string, error) {
		if v != "" && !strings.Contains(v, "{") {
			log.Warn("stripe " + name + " is written literally in the config, where GET /config/ and the autosave " +
				"show it; give it as {env.NAME} or {file.PATH}")
		}
		s, err := repl.ReplaceOrErr(v, true, true)
		if err != nil {
			return "", fmt.Errorf("stripe %s: %v", name, err)
		}
		return strings.TrimSpace(s), nil
	}
	var err error
	if c.secretKey, err = resolve("secret_key", c.SecretKey); err != nil {
		return err
	}
	if c.webhookSecret, err = resolve("webhook_secret", c.WebhookSecret); err != nil {
		return err
	}
	apiBase, err := repl.ReplaceOrErr(c.APIBase, true, true)
	if err != nil {
		return fmt.Errorf("stripe api_base: %v", err)
	}
	if err := c.checkLimits(); err != nil {
		return err
	}
	if c.secretKey == "" {
		return nil
	}
	if c.SuccessURL == "" {
		return fmt.Errorf("stripe: success_url is required with a secret_key")
	}
	for name, u := range map[string]string{"success_url": c.SuccessURL, "cancel_url": c.CancelURL, "api_base": apiBase} {
		if u == "" {
			continue
		}
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			return fmt.Errorf("stripe %s %q: want an absolute http(s) URL", name, u)
		}
	}
	hc := &http.Client{Timeout: stripeAPITimeout}
	logger := stripeLogger{log.Named("stripe").Sugar()}
	cfg := &stripe.BackendConfig{HTTPClient: hc, LeveledLogger: logger}
	if apiBase != "" {
		cfg.URL = stripe.String(apiBase)
	}
	// Checkout Sessions are the one Stripe API the gateway calls; its
	// client alone keeps the rest of stripe-go out of the binary.
	c.api = &checkoutsession.Client{B: stripe.GetBackendWithConfig(stripe.APIBackend, cfg), Key: c.secretKey}
	return nil
}

// stripeLogger sends stripe-go's logs to zap; its errors are the errors
// the caller gets back and logs with context, so they are warnings here.
type stripeLogger struct{ s *zap.SugaredLogger }

func (l stripeLogger) Debugf(format string, v ...any) { l.s.Debugf(format, v...) }
func (l stripeLogger) Infof(format string, v ...any)  { l.s.Debugf(format, v...) }
func (l stripeLogger) Warnf(format string, v ...any)  { l.s.Warnf(format, v...) }
func (l stripeLogger) Errorf(format string, v ...any) { l.s.Warnf(format, v...) }
