// Command testcaddy is a caddy binary with the standard modules and
// caddy-aitoken, built by the end-to-end tests (e2e/) so that they run real
// caddy processes without xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/cnaitoken/caddy-aitoken"
)

func main() {
	caddycmd.Main()
}
