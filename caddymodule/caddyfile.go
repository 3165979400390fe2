package caddymodule

import (
	"strconv"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("aitoken", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("aitoken", parseHandler)
	httpcaddyfile.RegisterDirectiveOrder("aitoken", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterHandlerDirective("aitoken_account", parseAccountAPI)
	// Ahead of respond, reverse_proxy and the aitoken meter (which sits just
	// before reverse_proxy and strips the client's key), so the account API
	// sees the key and answers before the request could go upstream.
	httpcaddyfile.RegisterDirectiveOrder("aitoken_account", httpcaddyfile.Before, "respond")
}

// parseGlobalOption sets up the aitoken app from the global option:
//
//	aitoken {
//		redis          <url>
//		redis_sentinel <master> <addr...> { password <secret> }
//		database       <path>
//		currency       <ISO code>
//		price <model>  input <per 1M> [cached_input <per 1M>] [cache_write <per 1M>] output <per 1M>
//		pricing_file   <path>
//		stripe { … }   # see parseStripeBlock
//		spool_dir      <path>
//		flush_interval <duration>
//		usage_retention   <duration>   # default 365d; "d" = days
//		payment_retention <duration>   # default 2555d
//		log_client_ip     on|off       # default on
//	}
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "aitoken", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile reads the aitoken global option.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "redis":
			if err := oneArg(d, &a.Redis); err != nil {
				return err
			}
		case "redis_sentinel":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.Errf("redis_sentinel: want a master name and sentinel addresses")
			}
			a.RedisSentinel = &SentinelConfig{Master: args[0], Addrs: args[1:]}
			for d.NextBlock(1) {
				switch d.Val() {
				case "password":
					if err := oneArg(d, &a.RedisSentinel.Password); err != nil {
						return err
					}
				default:
					return d.Errf("unrecognized redis_sentinel option %q", d.Val())
				}
			}
		case "database":
			if err := oneArg(d, &a.Database); err != nil {
				return err
			}
		case "currency":
			if err := oneArg(d, &a.Currency); err != nil {
				return err
			}
		case "stripe":
			cfg, err := parseStripeBlock(d)
			if err != nil {
				return err
			}
			a.Stripe = cfg
		case "spool_dir":
			if err := oneArg(d, &a.SpoolDir); err != nil {
				return err
			}
		case "pricing_file":
			if err := oneArg(d, &a.PricingFile); err != nil {
				return err
			}
		case "flush_interval":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil || dur <= 0 {
				return d.Errf("flush_interval %q: want a positive duration like 1s", s)
			}
			a.FlushInterval = caddy.Duration(dur)
		case "usage_retention", "payment_retention":
			name := d.Val()
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil || dur < minRetention {
				return d.Errf("%s %q: want a duration of at least a day, like 365d or 8760h", name, s)
			}
			if name == "usage_retention" {
				a.UsageRetention = caddy.Duration(dur)
			} else {
				a.PaymentRetention = caddy.Duration(dur)
			}
		case "lease_max":
			var v string
			if err := oneArg(d, &v); err != nil {
				return err
			}
			n, err := money.ParseNanos(v)
			if err != nil || n < 0 {
				return d.Errf("lease_max %q: want an amount like 5.00, or 0 to turn leases off", v)
			}
			a.LeaseMax = &n
		case "lease_ttl":
			var v string
			if err := oneArg(d, &v); err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur < time.Second || dur > time.Hour {
				return d.Errf("lease_ttl %q: want a duration from 1s to 1h", v)
			}
			a.LeaseTTL = caddy.Duration(dur)
		case "lease_nodes":
			var v string
			if err := oneArg(d, &v); err != nil {
				return err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxLeaseNodes {
				return d.Errf("lease_nodes %q: want a whole number from 1 to %d", v, maxLeaseNodes)
			}
			a.LeaseNodes = n
		case "log_client_ip":
			on, err := onOff(d)
			if err != nil {
				return err
			}
			a.LogClientIP = &on
		case "price":
			model, p, err := parsePrice(d)
			if err != nil {
				return err
			}
			if a.Prices == nil {
				a.Prices = make(map[string]money.Price)
			}
			if _, dup := a.Prices[model]; dup {
				return d.Errf("price %s: given twice", model)
			}
			a.Prices[model] = p
		default:
			return d.Errf("unrecognized aitoken option %q", d.Val())
		}
	}
	return nil
}

// parsePrice reads: price <model> input <x> [cached_input <y>] [cache_write <z>] output <w>
func parsePrice(d *caddyfile.Dispenser) (string, money.Price, error) {
	var p money.Price
	if !d.NextArg() {
		return "", p, d.ArgErr()
	}
	model := d.Val()
	seen := map[string]bool{}
	for d.NextArg() {
		field := d.Val()
		if !d.NextArg() {
			return "", p, d.Errf("price %s: %s needs a value", model, field)
		}
		n, err := money.ParseNanos(d.Val())
		if err != nil || n < 0 {
			return "", p, d.Errf("price %s %s %q: want a non-negative decimal like 0.14", model, field, d.Val())
		}
		switch field {
		case "input":
			p.Input = n
		case "cached_input":
			p.CachedInput = n
		case "cache_write":
			p.CacheWrite = n
		case "output":
			p.Output = n
		default:
			return "", p, d.Errf("price %s: unknown field %q (want input, cached_input, cache_write, output)", model, field)
		}
		seen[field] = true
	}
	if !seen["input"] || !seen["output"] {
		return "", p, d.Errf("price %s: input and output are required", model)
	}
	return model, p, nil
}

// onOff reads one "on" or "off" argument.
func onOff(d *caddyfile.Dispenser) (bool, error) {
	name := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return false, err
	}
	switch s {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, d.Errf("%s %q: want on or off", name, s)
}

func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile reads the aitoken directive:
//
//	aitoken {
//		models <model...>
//		max_request_body <size>
//		reserve_output_tokens <n>
//		max_output_tokens <n>
//		on_redis_error deny|allow
//		inject_stream_usage on|off
//		passthrough <path-pattern...>
//		alias <customer-model> <provider-model>
//		on_client_gone finish|cancel [<timeout>]
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "models":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.Models = append(h.Models, args...)
		case "max_request_body":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			n, err := humanize.ParseBytes(s)
			if err != nil || n == 0 || n > 1<<32 {
				return d.Errf("max_request_body %q: want a size like 8MiB", s)
			}
			h.MaxRequestBody = int64(n)
		case "reserve_output_tokens":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 || n > 1<<31-1 {
				return d.Errf("reserve_output_tokens %q: want a positive integer", s)
			}
			h.ReserveOutputTokens = n
		case "max_output_tokens":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 || n > 1<<31-1 {
				return d.Errf("max_output_tokens %q: want a positive integer", s)
			}
			h.MaxOutputTokens = n
		case "on_redis_error":
			if err := oneArg(d, &h.OnRedisError); err != nil {
				return err
			}
			if h.OnRedisError != "deny" && h.OnRedisError != "allow" {
				return d.Errf("on_redis_error %q: want deny or allow", h.OnRedisError)
			}
		case "inject_stream_usage":
			on, err := onOff(d)
			if err != nil {
				return err
			}
			h.InjectStreamUsage = &on
		case "passthrough":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.Passthrough = append(h.Passthrough, args...)
		case "alias":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.ArgErr()
			}
			if _, dup := h.Aliases[args[0]]; dup {
				return d.Errf("alias %q given twice", args[0])
			}
			if h.Aliases == nil {
				h.Aliases = make(map[string]string)
			}
			h.Aliases[args[0]] = args[1]
		case "on_client_gone":
			args := d.RemainingArgs()
			if len(args) == 0 || len(args) > 2 {
				return d.ArgErr()
			}
			h.OnClientGone = args[0]
			if h.OnClientGone != onClientGoneFinish && h.OnClientGone != onClientGoneCancel {
				return d.Errf("on_client_gone %q: want finish or cancel", h.OnClientGone)
			}
			if len(args) == 2 {
				if h.OnClientGone != onClientGoneFinish {
					return d.Errf("on_client_gone cancel takes no timeout")
				}
				dur, err := caddy.ParseDuration(args[1])
				if err != nil || dur <= 0 {
					return d.Errf("on_client_gone finish %q: want a duration such as 2m", args[1])
				}
				h.ClientGoneTimeout = caddy.Duration(dur)
			}
		default:
			return d.Errf("unrecognized aitoken option %q", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)

func parseAccountAPI(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(AccountAPI)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile reads the aitoken_account directive, which takes no
// options:
//
//	aitoken_account
func (h *AccountAPI) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("aitoken_account takes no options")
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*AccountAPI)(nil)
