package caddymodule_test

import (
	"strings"
	"testing"

	"github.com/cnaitoken/caddy-aitoken/caddymodule"
)

// A typo in a command fails (exit status 1) and names the word; a bare
// command group prints its help and succeeds.
func TestCLIUnknownCommandFails(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"keys", "bogus"}, {"users", "lst"}} {
		if out, err := caddymodule.RunCLI(t, args...); err == nil || !strings.Contains(err.Error(), `"`+args[len(args)-1]+`"`) {
			t.Errorf("%v: err %v, output %q", args, err, out)
		}
	}
	for _, args := range [][]string{{}, {"keys"}, {"users"}} {
		if out, err := caddymodule.RunCLI(t, args...); err != nil || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: err %v, output %q", args, err, out)
		}
	}
}
