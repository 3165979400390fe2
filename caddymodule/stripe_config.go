package caddymodule

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/cnaitoken/caddy-aitoken/billing"
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
	MinTopup billing.Nanos `json:"min_topup,omitempty"`

	// APIBase replaces https://api.stripe.com, for tests against
	// stripe-mock. Placeholders are resolved.
	APIBase string `json:"api_base,omitempty"`

	once          sync.Once
	err           error
	secretKey     string
	webhookSecret string
	api           *client.API // nil without a secret key
}

// Defaults of the stripe block.
const (
	defaultMinTopup  = billing.NanosPerUnit
	stripeAPITimeout = 30 * time.Second
)

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
	if c.MinTopup <= 0 {
		c.MinTopup = defaultMinTopup
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
	c.api = client.New(c.secretKey, &stripe.Backends{
		API:     stripe.GetBackendWithConfig(stripe.APIBackend, cfg),
		Connect: stripe.GetBackendWithConfig(stripe.ConnectBackend, &stripe.BackendConfig{HTTPClient: hc, LeveledLogger: logger}),
		Uploads: stripe.GetBackendWithConfig(stripe.UploadsBackend, &stripe.BackendConfig{HTTPClient: hc, LeveledLogger: logger}),
	})
	return nil
}

// stripeLogger sends stripe-go's logs to zap; its errors are the errors
// the caller gets back and logs with context, so they are warnings here.
type stripeLogger struct{ s *zap.SugaredLogger }

func (l stripeLogger) Debugf(format string, v ...any) { l.s.Debugf(format, v...) }
func (l stripeLogger) Infof(format string, v ...any)  { l.s.Debugf(format, v...) }
func (l stripeLogger) Warnf(format string, v ...any)  { l.s.Warnf(format, v...) }
func (l stripeLogger) Errorf(format string, v ...any) { l.s.Warnf(format, v...) }

// parseStripeBlock reads the stripe { … } block of the aitoken option:
//
//	stripe {
//		secret_key     <secret>
//		webhook_secret <secret>
//		success_url    <url>
//		cancel_url     <url>
//		min_topup      <decimal>
//		api_base       <url>
//	}
func parseStripeBlock(d *caddyfile.Dispenser) (*StripeConfig, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	c := new(StripeConfig)
	for d.NextBlock(1) {
		switch d.Val() {
		case "secret_key":
			if err := oneArg(d, &c.SecretKey); err != nil {
				return nil, err
			}
		case "webhook_secret":
			if err := oneArg(d, &c.WebhookSecret); err != nil {
				return nil, err
			}
		case "success_url":
			if err := oneArg(d, &c.SuccessURL); err != nil {
				return nil, err
			}
		case "cancel_url":
			if err := oneArg(d, &c.CancelURL); err != nil {
				return nil, err
			}
		case "api_base":
			if err := oneArg(d, &c.APIBase); err != nil {
				return nil, err
			}
		case "min_topup":
			var s string
			if err := oneArg(d, &s); err != nil {
				return nil, err
			}
			n, err := billing.ParseNanos(s)
			if err != nil || n <= 0 {
				return nil, d.Errf("stripe min_topup %q: want a positive decimal like 5.00", s)
			}
			c.MinTopup = n
		default:
			return nil, d.Errf("unrecognized stripe option %q", d.Val())
		}
	}
	return c, nil
}
