package caddymodule

// The CLI's checks of what the user typed, and its errors: each speaks of
// the argument or flag as typed (`amount "abc": want a decimal like 10.00
// or -2.50`, `--rpm "x": want a whole number`), checked before the admin
// API is called where that is cheap; the admin API's field-named errors
// are put back in those terms otherwise.

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// argNames checks a command's positional arguments, naming the one missing
// or the one too many.
func argNames(names ...string) cobra.PositionalArgs {
	return func(c *cobra.Command, a []string) error {
		if len(a) < len(names) {
			return fmt.Errorf("missing %s (usage: %s)", names[len(a)], c.UseLine())
		}
		if len(a) > len(names) {
			return fmt.Errorf("unexpected argument %q (usage: %s)", a[len(names)], c.UseLine())
		}
		return nil
	}
}

// noArgs refuses any positional argument, naming it.
func noArgs(c *cobra.Command, a []string) error { return argNames()(c, a) }

// typedErr is a value the user typed that cannot be used: name is the
// argument ("amount") or flag ("--rpm").
func typedErr(name, value, want string) error {
	return fmt.Errorf("%s %s: %s", name, strconv.Quote(value), want)
}

// checkAmount reads a decimal amount as typed; positive requires > 0.
func checkAmount(name, s string, positive bool) (money.Nanos, error) {
	n, err := money.ParseNanos(s)
	switch {
	case errors.Is(err, money.ErrAmountRange):
		return 0, typedErr(name, s, "out of range: at most "+money.MaxNanos.String()+" either way")
	case err != nil && positive:
		return 0, typedErr(name, s, "want a positive decimal like 10.00")
	case err != nil:
		return 0, typedErr(name, s, "want a decimal like 10.00 or -2.50")
	case positive && n <= 0:
		return 0, typedErr(name, s, "want a positive decimal like 10.00")
	case n == 0:
		return 0, typedErr(name, s, "want a non-zero amount like 10.00 or -2.50")
	}
	return n, nil
}

// checkWhole reads a whole number flag within [lo, hi]; empty is
// unset.
func checkWhole(flag, s string, lo, hi int64, want string) (int64, bool, error) {
	if s == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, typedErr(flag, s, "want a whole number")
	}
	if n < lo || n > hi {
		return 0, false, typedErr(flag, s, want)
	}
	return n, true, nil
}

// checkLimit checks a --limit flag (1 to the admin API's page bound).
func checkLimit(s string) error {
	max := int64(usagelog.MaxUsageLimit)
	_, _, err := checkWhole("--limit", s, 1, max, fmt.Sprintf("want a whole number from 1 to %d", max))
	return err
}

// checkExpires reads an --expires flag: an RFC 3339 time in the future.
func checkExpires(s string) error {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return typedErr("--expires", s, "want an RFC 3339 time like 2026-01-02T15:04:05Z")
	}
	if !t.After(time.Now()) {
		return typedErr("--expires", s, "must be in the future")
	}
	return nil
}

// checkTime reads a --from or --to flag; empty is unset.
func checkTime(flag, s string) error {
	if _, err := parseTimeParam(s); err != nil {
		return typedErr(flag, s, err.Error())
	}
	return nil
}

// checkOneOf checks a flag against its allowed values; empty is unset.
func checkOneOf(flag, s string, allowed ...string) error {
	for _, a := range allowed {
		if s == "" || s == a {
			return nil
		}
	}
	return typedErr(flag, s, "want "+orList(allowed))
}

// orList writes "a, b or c".
func orList(l []string) string {
	if len(l) < 2 {
		return strings.Join(l, "")
	}
	return strings.Join(l[:len(l)-1], ", ") + " or " + l[len(l)-1]
}

// typed is what the user typed for the admin API's body or query fields:
// field → the argument or flag's name and its value. An API error naming
// a field is told in its terms.
type typed map[string][2]string

// apiErrorRE matches the error caddycmd.AdminAPIRequest makes of an
// answer ≥ 400.
var apiErrorRE = regexp.MustCompile(`(?s)^caddy responded with error: HTTP (\d+): (.*)$`)

// cliError turns an admin request's error into what the user typed: the
// admin API's message ("field: problem"), with the field given as its
// flag or argument and value; a request that never reached the API says
// where it went.
func cliError(err error, addr string, t typed) error {
	m := apiErrorRE.FindStringSubmatch(err.Error())
	if m == nil {
		return fmt.Errorf("cannot reach the admin API at %s (is Caddy running? --address or --config tells where): %v", addr, err)
	}
	var body struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(m[2]), &body) != nil || body.Error == "" {
		return fmt.Errorf("admin API: HTTP %s: %s", m[1], strings.TrimSpace(m[2]))
	}
	msg := body.Error
	field, rest, ok := strings.Cut(msg, ": ")
	if !ok {
		return errors.New(msg)
	}
	arg, known := t[field]
	if !known {
		return errors.New(msg)
	}
	q := strconv.Quote(arg[1])
	if strings.HasPrefix(rest, q+" ") {
		return errors.New(arg[0] + " " + rest)
	}
	return errors.New(arg[0] + " " + q + ": " + rest)
}
