package caddymodule

import (
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("aitoken_stripe", parseStripeWebhook)
	// With the handlers that answer requests, ahead of respond and
	// reverse_proxy, so a catch-all of theirs does not shadow the webhook.
	httpcaddyfile.RegisterDirectiveOrder("aitoken_stripe", httpcaddyfile.Before, "respond")
}

// parseStripeBlock reads the stripe { … } block of the aitoken option:
//
//	stripe {
//		secret_key     <secret>
//		webhook_secret <secret>
//		success_url    <url>
//		cancel_url     <url>
//		min_topup      <decimal>
//		max_topup      <decimal>
//		topup_rate     <count> [<window>] | off
//		api_base       <url>
//	}
//
// topup_rate 10 1h allows each API key ten top-ups an hour (the window
// defaults to 1h).
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
			n, err := money.ParseNanos(s)
			if err != nil || n <= 0 {
				return nil, d.Errf("stripe min_topup %q: want a positive decimal like 5.00", s)
			}
			c.MinTopup = n
		case "max_topup":
			var s string
			if err := oneArg(d, &s); err != nil {
				return nil, err
			}
			n, err := money.ParseNanos(s)
			if err != nil || n <= 0 {
				return nil, d.Errf("stripe max_topup %q: want a positive decimal like 10000.00", s)
			}
			c.MaxTopup = n
		case "topup_rate":
			r, err := parseTopupRate(d)
			if err != nil {
				return nil, err
			}
			c.TopupRate = r
		default:
			return nil, d.Errf("unrecognized stripe option %q", d.Val())
		}
	}
	return c, nil
}

// parseTopupRate reads "topup_rate <count> [<window>]" or "topup_rate off".
func parseTopupRate(d *caddyfile.Dispenser) (*TopupRate, error) {
	args := d.RemainingArgs()
	if len(args) == 1 && args[0] == "off" {
		return &TopupRate{Sessions: -1}, nil
	}
	if len(args) < 1 || len(args) > 2 {
		return nil, d.Errf("stripe topup_rate: want <count> [<window>], e.g. 10 1h, or off")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 || n > maxTopupSessions {
		return nil, d.Errf("stripe topup_rate %q: want a count from 1 to %d, or off", args[0], maxTopupSessions)
	}
	r := &TopupRate{Sessions: n}
	if len(args) == 2 {
		w, err := caddy.ParseDuration(args[1])
		if err != nil || w < time.Second || w > maxTopupWindow {
			return nil, d.Errf("stripe topup_rate window %q: want a duration from 1s to %s", args[1], maxTopupWindow)
		}
		r.Window = caddy.Duration(w)
	}
	return r, nil
}

func parseStripeWebhook(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(StripeWebhook)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile reads the aitoken_stripe directive, which takes no
// options (they are in the stripe block of the aitoken global option):
//
//	aitoken_stripe
func (h *StripeWebhook) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("aitoken_stripe takes no options; configure the stripe block of the aitoken global option")
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*StripeWebhook)(nil)
