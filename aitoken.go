// Package aitoken is the root of the caddy-aitoken plugin: importing it
// (as xcaddy does) registers every caddy-aitoken module with Caddy.
package aitoken

import (
	// The Caddy modules: app, handlers, admin API, Caddyfile syntax.
	_ "github.com/cnaitoken/caddy-aitoken/caddymodule"
)
