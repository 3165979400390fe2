package caddymodule

import "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

// StripeConfig configures Stripe top-ups (SPEC 3.1 stripe block).
type StripeConfig struct{}

// parseStripeBlock reads the stripe { … } block of the aitoken option.
func parseStripeBlock(d *caddyfile.Dispenser) (*StripeConfig, error) {
	return nil, d.Err("stripe: not supported yet")
}
