package caddymodule_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
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

// Errors speak of what was typed, checked before the admin API is called
// (so these need no running Caddy): the argument or flag, its value, and
// what is wanted.
func TestCLIErrorsNameWhatWasTyped(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"credit", "bob", "abc"}, `amount "abc": want a decimal like 10.00 or -2.50`},
		{[]string{"credit", "bob", "0"}, `amount "0": want a non-zero amount like 10.00 or -2.50`},
		{[]string{"credit", "bob", "99999999"}, `amount "99999999": out of range: at most 9007199.254740991 either way`},
		{[]string{"credit", "bob"}, `missing AMOUNT (usage: aitoken credit USER AMOUNT [flags])`},
		{[]string{"credit"}, `missing USER (usage: aitoken credit USER AMOUNT [flags])`},
		{[]string{"users", "show", "a", "b"}, `unexpected argument "b" (usage: aitoken users show USER [flags])`},
		{[]string{"users", "list", "--limit", "0"}, `--limit "0": want a whole number from 1 to 1000`},
		{[]string{"users", "list", "--status", "gone"}, `--status "gone": want active or deleted`},
		{[]string{"keys", "create", "bob", "--rpm", "x"}, `--rpm "x": want a whole number`},
		{[]string{"keys", "create", "bob", "--tpm", "-3"}, `--tpm "-3": want 0 (unlimited) or a positive whole number`},
		{[]string{"keys", "create", "bob", "--expires", "tomorrow"}, `--expires "tomorrow": want an RFC 3339 time like 2026-01-02T15:04:05Z`},
		{[]string{"keys", "update", "k1", "--expires", "2001-01-01T00:00:00Z"}, `--expires "2001-01-01T00:00:00Z": must be in the future, or never`},
		{[]string{"keys", "update", "k1"}, `nothing to change: give at least one of --name, --models, --rpm, --tpm, --allowed-ips, --expires`},
		{[]string{"usage", "--from", "yesterday"}, `--from "yesterday": want RFC 3339 (2026-01-02T15:04:05Z) or a date (2026-01-02)`},
		{[]string{"usage", "summary", "--group-by", "key"}, `--group-by "key": want model or day`},
		{[]string{"payments", "--before", "p1"}, `--before "p1": want a whole number`},
		{[]string{"codes", "mint"}, `missing --amount, the value of each code, like 10.00 (usage: aitoken codes mint [flags])`},
		{[]string{"codes", "mint", "--amount", "0"}, `--amount "0": want a positive decimal like 10.00`},
		{[]string{"codes", "mint", "--amount", "ten"}, `--amount "ten": want a positive decimal like 10.00`},
		{[]string{"codes", "mint", "--amount", "1", "--count", "1001"}, `--count "1001": want a whole number from 1 to 1000`},
		{[]string{"codes", "mint", "--amount", "1", "--count", "many"}, `--count "many": want a whole number`},
		{[]string{"codes", "list", "--status", "used"}, `--status "used": want unused, redeemed, void or expired`},
		{[]string{"codes", "void"}, `missing CODE_ID (usage: aitoken codes void CODE_ID [flags])`},
	} {
		out, err := caddymodule.RunCLI(t, append(c.args, "--address", "127.0.0.1:1")...)
		if err == nil || err.Error() != c.want {
			t.Errorf("%v: got %v, want %q (output %q)", c.args, err, c.want, out)
		}
	}
}

// An admin API that cannot be reached is named, with how to point at it.
func TestCLIUnreachableAdmin(t *testing.T) {
	_, err := caddymodule.RunCLI(t, "users", "show", "bob", "--address", "127.0.0.1:1")
	if err == nil || !strings.HasPrefix(err.Error(), "cannot reach the admin API at 127.0.0.1:1 (is Caddy running? --address or --config tells where): ") {
		t.Fatalf("got %v", err)
	}
}

// The admin API's refusals come back in terms of what was typed.
func TestCLIErrorsFromTheAPI(t *testing.T) {
	gateway(t)
	addr := strings.TrimPrefix(adminURL, "http://")
	u, _ := newAccount(t, "", "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"credit", "nobody-here", "1.00"}, `user "nobody-here" not found`},
		{[]string{"users", "show", "nobody-here"}, `user "nobody-here" not found`},
		{[]string{"keys", "create", "nobody-here"}, `user "nobody-here" not found`},
		{[]string{"keys", "create", u.ID, "--models", "test-model,nosuch"}, `--models "test-model,nosuch": "nosuch" has no price and is no alias`},
		{[]string{"keys", "create", u.ID, "--allowed-ips", "10.0.0.0/99"}, `--allowed-ips "10.0.0.0/99" is not an IP address or CIDR range`},
		{[]string{"users", "create", "--id", "bad/id"}, `--id "bad/id": use 1 to 64 letters, digits, '-', '_' or '.'`},
		{[]string{"users", "create", "--id", u.ID}, `--id "` + u.ID + `": user "` + u.ID + `" already exists`},
		{[]string{"users", "list", "--cursor", "x", "--email", "not-an-email"}, ``},
		{[]string{"codes", "void", "code_nope"}, `code "code_nope" not found`},
		{[]string{"codes", "list", "--cursor", "code_nope"}, `--cursor "code_nope": no code "code_nope"`},
		{[]string{"codes", "mint", "--amount", "1", "--note", strings.Repeat("n", 201)}, `--note "` + strings.Repeat("n", 201) + `": longer than 200 characters`},
	} {
		out, err := caddymodule.RunCLI(t, append(c.args, "--address", addr)...)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v: %v", c.args, err)
		case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), c.want)):
			t.Errorf("%v: got %v, want %q (output %q)", c.args, err, c.want, out)
		}
	}
}

// cliEnv carries the arguments of `caddy aitoken` run as a child process
// of the test binary (see TestMain).
const cliEnv = "AITOKEN_TEST_CLI_ARGS"

// runCaddy runs `caddy aitoken args...` as its own process, the way an
// operator does, and returns its stderr and exit status.
func runCaddy(t *testing.T, args ...string) (string, int) {
	t.Helper()
	b, _ := json.Marshal(append([]string{"aitoken"}, args...))
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), cliEnv+"="+string(b))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stderr.String(), 0
	case errors.As(err, &ee):
		return stderr.String(), ee.ExitCode()
	}
	t.Fatal(err)
	return "", -1
}

// The exit status: 0 for success, 1 for any error, a usage error (a
// missing argument, a bad value, an unknown command) and the admin API's
// refusal alike; the message names what was typed.
func TestCLIExitStatus(t *testing.T) {
	gateway(t)
	addr := strings.TrimPrefix(adminURL, "http://")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"users", "list", "--limit", "1"}, 0, ""},
		{[]string{"users", "show", "a", "b"}, 1, `unexpected argument "b" (usage: caddy aitoken users show USER [flags])`},
		{[]string{"credit", "bob", "abc"}, 1, `amount "abc": want a decimal like 10.00 or -2.50`},
		{[]string{"credit", "bob"}, 1, `missing AMOUNT (usage: caddy aitoken credit USER AMOUNT [flags])`},
		{[]string{"keys", "create", "bob", "--rpm", "x"}, 1, `--rpm "x": want a whole number`},
		{[]string{"credit", "nobody-here", "1.00"}, 1, `user "nobody-here" not found`},
		{[]string{"bogus"}, 1, `unknown command "bogus" for "caddy aitoken"; see "caddy aitoken --help"`},
	} {
		stderr, code := runCaddy(t, append(c.args, "--address", addr)...)
		want := ""
		if c.want != "" {
			want = "Error: " + c.want + "\n"
		}
		if code != c.code || stderr != want {
			t.Errorf("%v: exit %d, want %d; stderr %q, want %q", c.args, code, c.code, stderr, want)
		}
	}
}
