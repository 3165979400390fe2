package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "aitoken",
		Usage: "<users|credit|keys|codes|usage|payments|audit|reconcile> [args] [--address <admin>] [--json]",
		Short: "Manages aitoken users, credits, keys, prepaid codes, usage, payments and reconciliation",
		Long: `
Manages the aitoken gateway through the admin API of a running Caddy
(the ledger node). --address is the admin listener; by default it is found
as for "caddy reload" (the --config file's admin address, else localhost:2019).

Commands:
  users create [--id ID] [--email E] [--name N]   create a user
  users list [--email E] [--status S] [--limit N] [--cursor ID]
                                                  users in id order (a table)
  users show USER                                 balance, held, currency, status
  users export USER                               everything held about the user, one JSON
                                                  document (redirect it to a file)
  users delete USER                               erase the user's personal data and revoke
                                                  every key; payment records are kept
  credit USER AMOUNT [--reason R]                 credit (negative debits), e.g. 10.00
  keys create USER [--name N] [--models a,b] [--rpm N] [--tpm N] [--expires RFC3339]
                 [--allowed-ips a,b]              mint a key; the secret is printed once
  keys list USER                                  keys without secrets
  keys update KEY_ID [--name N] [--models a,b] [--rpm N] [--tpm N] [--allowed-ips a,b]
                 [--expires RFC3339|never]        change only the settings given
  keys revoke KEY_ID                              revoke on every node
  codes mint --amount A [--count N] [--expires RFC3339] [--note N]
                                                  mint prepaid codes; printed once
  codes list [--status S] [--limit N] [--cursor ID]
                                                  codes, newest first, without secrets
  codes void CODE_ID                              void an unused code
  usage [--user U] [--key K] [--model M] [--from T] [--to T] [--limit N] [--before REQUEST_ID]
                                                  usage records, newest first (a table)
  usage summary [--user U] [--from T] [--to T] [--group-by model|day]
                                                  totals of requests, tokens and cost
  payments [--user U] [--limit N] [--before ID]   Stripe top-ups, refunds and disputes
  audit [--user U] [--action A] [--limit N] [--before ID]
                                                  erasures, exports and retention runs
  reconcile [--apply]                             compare the ledger with Redis;
                                                  --apply rebuilds Redis from the ledger

Output is human-readable; --json prints the admin API's JSON. Exit status is
0 on success and 1 on any error (the message goes to stderr), an unknown
command, a missing argument and a bad flag value included. Errors name the
argument or flag as typed, e.g. amount "abc": want a decimal like 10.00.

Every command, flag and admin route: docs/reference.md in the caddy-aitoken
repository (https://github.com/cnaitoken/caddy-aitoken).`,
		CobraFunc: buildCLI,
	})
}

// cliOpts are the flags every aitoken subcommand shares.
type cliOpts struct {
	address, config, adapter string
	json                     bool
	out                      io.Writer
}

func buildCLI(cmd *cobra.Command) {
	o := new(cliOpts)
	cmd.PersistentFlags().StringVar(&o.address, "address", "", "The address of Caddy's admin API")
	cmd.PersistentFlags().StringVarP(&o.config, "config", "c", "", "Configuration file to find the admin address in")
	cmd.PersistentFlags().StringVarP(&o.adapter, "adapter", "a", "", "Name of the config adapter")
	cmd.PersistentFlags().BoolVar(&o.json, "json", false, "Print the admin API's JSON")
	cmd.SilenceUsage = true
	cmd.PersistentPreRun = func(c *cobra.Command, _ []string) { o.out = c.OutOrStdout() }
	cmd.Args, cmd.RunE = cobra.ArbitraryArgs, unknownCommand
	cmd.AddCommand(o.usersCmd(), o.creditCmd(), o.keysCmd(), o.usageCmd(), o.paymentsCmd(), o.auditCmd(),
		o.reconcileCmd(), o.codesCmd())
}

func (o *cliOpts) usersCmd() *cobra.Command {
	users := &cobra.Command{Use: "users", Short: "Create, show, export and delete users"}
	var id, email, name string
	create := &cobra.Command{Use: "create", Short: "Create a user", Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return o.call("POST", "/aitoken/users", map[string]any{"id": id, "email": email, "name": name}, printObject,
				typed{"id": {"--id", id}, "email": {"--email", email}, "name": {"--name", name}})
		}}
	create.Flags().StringVar(&id, "id", "", "User ID (default: generated)")
	create.Flags().StringVar(&email, "email", "", "Email address")
	create.Flags().StringVar(&name, "name", "", "Display name")
	show := &cobra.Command{Use: "show USER", Short: "Show a user and its balance", Args: argNames("USER"),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("GET", "/aitoken/users/"+url.PathEscape(a[0]), nil, printObject, nil)
		}}
	export := &cobra.Command{Use: "export USER", Short: "Export everything held about a user (one JSON document)", Args: argNames("USER"),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("GET", "/aitoken/users/"+url.PathEscape(a[0])+"/export", nil, printRaw, nil)
		}}
	del := &cobra.Command{Use: "delete USER", Short: "Erase a user's personal data and revoke every key", Args: argNames("USER"),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("DELETE", "/aitoken/users/"+url.PathEscape(a[0]), nil, printErasure, nil)
		}}
	var lq struct{ email, status, limit, cursor string }
	list := &cobra.Command{Use: "list", Short: "List users (a page; --cursor for the next)", Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := errors.Join(checkOneOf("--status", lq.status, "active", "deleted"), checkLimit(lq.limit)); err != nil {
				return err
			}
			return o.call("GET", "/aitoken/users?"+query(map[string]string{"email": lq.email, "status": lq.status,
				"limit": lq.limit, "cursor": lq.cursor}), nil, printUsers,
				typed{"email": {"--email", lq.email}, "cursor": {"--cursor", lq.cursor}})
		}}
	list.Flags().StringVar(&lq.email, "email", "", "Only users with this email (any letter case)")
	list.Flags().StringVar(&lq.status, "status", "", "Only active or deleted users")
	list.Flags().StringVar(&lq.limit, "limit", "", "Page size (default 100, at most 1000)")
	list.Flags().StringVar(&lq.cursor, "cursor", "", "Page cursor: the id printed as next by the previous page")
	users.Args, users.RunE = cobra.ArbitraryArgs, unknownCommand
	users.AddCommand(create, list, show, export, del)
	return users
}

func (o *cliOpts) creditCmd() *cobra.Command {
	var reason string
	credit := &cobra.Command{Use: "credit USER AMOUNT", Short: "Credit a user (negative debits)", Args: argNames("USER", "AMOUNT"),
		RunE: func(c *cobra.Command, a []string) error {
			if _, err := checkAmount("amount", a[1], false); err != nil {
				return err
			}
			return o.call("POST", "/aitoken/users/"+url.PathEscape(a[0])+"/credits",
				map[string]any{"amount": a[1], "reason": reason}, printObject,
				typed{"amount": {"amount", a[1]}, "reason": {"--reason", reason}})
		}}
	credit.Flags().StringVar(&reason, "reason", "", "Why (kept in the ledger)")
	return credit
}

// keyFlags are the settings of keys create and keys update, as typed.
type keyFlags struct{ name, models, rpm, tpm, expires, allowedIPs string }

// body checks the flags given (all, or those changed) and returns the
// admin request's fields; update allows --expires never.
func (kf *keyFlags) body(c *cobra.Command, update bool) (map[string]any, error) {
	body := map[string]any{}
	given := func(name string) bool { return !update || c.Flags().Changed(name) }
	for _, l := range []struct {
		flag, field, val string
	}{{"--rpm", "rpm", kf.rpm}, {"--tpm", "tpm", kf.tpm}} {
		if !given(l.flag[2:]) {
			continue
		}
		if update && l.val == "" {
			return nil, typedErr(l.flag, l.val, "want a whole number")
		}
		n, _, err := checkWhole(l.flag, l.val, 0, 1<<53, "want 0 (unlimited) or a positive whole number")
		if err != nil {
			return nil, err
		}
		body[l.field] = n
	}
	if given("name") {
		body["name"] = kf.name
	}
	if given("models") && (update || kf.models != "") {
		body["models"] = splitList(kf.models)
	}
	if given("allowed-ips") && (update || kf.allowedIPs != "") {
		body["allowed_ips"] = splitList(kf.allowedIPs)
	}
	if given("expires") && (update || kf.expires != "") {
		switch {
		case update && kf.expires == "never":
			body["expires_at"] = nil
		default:
			if err := checkExpires(kf.expires); err != nil {
				if update {
					err = fmt.Errorf("%w, or never", err)
				}
				return nil, err
			}
			body["expires_at"] = kf.expires
		}
	}
	return body, nil
}

// typed names the key settings as typed.
func (kf *keyFlags) typed() typed {
	return typed{"name": {"--name", kf.name}, "models": {"--models", kf.models}, "rpm": {"--rpm", kf.rpm},
		"tpm": {"--tpm", kf.tpm}, "allowed_ips": {"--allowed-ips", kf.allowedIPs}, "expires_at": {"--expires", kf.expires}}
}

func (kf *keyFlags) register(c *cobra.Command, update bool) {
	empty, expires := "default: all", "Expiry time, RFC 3339"
	if update {
		empty, expires = "empty: all", "Expiry time, RFC 3339, or never"
	}
	c.Flags().StringVar(&kf.name, "name", "", "A name for the key")
	c.Flags().StringVar(&kf.models, "models", "", "Comma-separated models the key may use ("+empty+")")
	c.Flags().StringVar(&kf.rpm, "rpm", "", "Requests per minute (0: unlimited)")
	c.Flags().StringVar(&kf.tpm, "tpm", "", "Tokens per minute (0: unlimited)")
	c.Flags().StringVar(&kf.expires, "expires", "", expires)
	c.Flags().StringVar(&kf.allowedIPs, "allowed-ips", "", "Comma-separated client IPs or CIDR ranges the key may be used from (default: any)")
}

func (o *cliOpts) keysCmd() *cobra.Command {
	keys := &cobra.Command{Use: "keys", Short: "Create, list, update and revoke API keys"}
	var cf, uf keyFlags
	kcreate := &cobra.Command{Use: "create USER", Short: "Mint a key (the secret is shown once)", Args: argNames("USER"),
		RunE: func(c *cobra.Command, a []string) error {
			body, err := cf.body(c, false)
			if err != nil {
				return err
			}
			body["user"] = a[0]
			t := cf.typed()
			t["user"] = [2]string{"user", a[0]}
			return o.call("POST", "/aitoken/keys", body, printObject, t)
		}}
	cf.register(kcreate, false)
	kupdate := &cobra.Command{Use: "update KEY_ID", Short: "Change a key's name, models, limits, allowed IPs or expiry (only the flags given)",
		Args: argNames("KEY_ID"),
		RunE: func(c *cobra.Command, a []string) error {
			body, err := uf.body(c, true)
			if err != nil {
				return err
			}
			if len(body) == 0 {
				return errors.New("nothing to change: give at least one of --name, --models, --rpm, --tpm, --allowed-ips, --expires")
			}
			return o.call("PATCH", "/aitoken/keys/"+url.PathEscape(a[0]), body, printObject, uf.typed())
		}}
	uf.register(kupdate, true)
	klist := &cobra.Command{Use: "list USER", Short: "List a user's keys", Args: argNames("USER"),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("GET", "/aitoken/keys?user="+url.QueryEscape(a[0]), nil, printKeys, typed{"user": {"user", a[0]}})
		}}
	krevoke := &cobra.Command{Use: "revoke KEY_ID", Short: "Revoke a key", Args: argNames("KEY_ID"),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("DELETE", "/aitoken/keys/"+url.PathEscape(a[0]), nil, printObject, nil)
		}}
	keys.Args, keys.RunE = cobra.ArbitraryArgs, unknownCommand
	keys.AddCommand(kcreate, klist, kupdate, krevoke)
	return keys
}

func (o *cliOpts) usageCmd() *cobra.Command {
	var q struct{ user, key, model, from, to, limit, before string }
	usage := &cobra.Command{Use: "usage", Short: "List usage records; usage summary adds them up", Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := errors.Join(checkTime("--from", q.from), checkTime("--to", q.to), checkLimit(q.limit)); err != nil {
				return err
			}
			return o.call("GET", "/aitoken/usage?"+query(map[string]string{"user": q.user, "key": q.key, "model": q.model,
				"from": q.from, "to": q.to, "limit": q.limit, "before": q.before}), nil, printUsage,
				typed{"user": {"--user", q.user}, "key": {"--key", q.key}, "model": {"--model", q.model},
					"from": {"--from", q.from}, "to": {"--to", q.to}, "before": {"--before", q.before}})
		}}
	for name, p := range map[string]*string{"user": &q.user, "key": &q.key, "model": &q.model, "from": &q.from, "to": &q.to, "limit": &q.limit} {
		usage.Flags().StringVar(p, name, "", "Filter: "+name)
	}
	usage.Flags().StringVar(&q.before, "before", "", "Page cursor: the request_id printed as next by the previous page")
	var sq struct{ user, from, to, groupBy string }
	summary := &cobra.Command{Use: "summary", Short: "Totals of requests, tokens and cost", Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := errors.Join(checkTime("--from", sq.from), checkTime("--to", sq.to),
				checkOneOf("--group-by", sq.groupBy, "model", "day")); err != nil {
				return err
			}
			return o.call("GET", "/aitoken/usage/summary?"+query(map[string]string{"user": sq.user, "from": sq.from,
				"to": sq.to, "group_by": sq.groupBy}), nil, printSummary,
				typed{"user": {"--user", sq.user}, "from": {"--from", sq.from}, "to": {"--to", sq.to}})
		}}
	summary.Flags().StringVar(&sq.user, "user", "", "Only this user")
	summary.Flags().StringVar(&sq.from, "from", "", "From this time (RFC 3339 or a date), inclusive")
	summary.Flags().StringVar(&sq.to, "to", "", "To this time (RFC 3339 or a date), exclusive")
	summary.Flags().StringVar(&sq.groupBy, "group-by", "", "Group by model or day (UTC); default: one total")
	usage.AddCommand(summary)
	return usage
}

func (o *cliOpts) paymentsCmd() *cobra.Command {
	var pq struct{ user, limit, before string }
	payments := &cobra.Command{Use: "payments", Short: "List Stripe payments and refunds, newest first", Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			_, _, berr := checkWhole("--before", pq.before, 1, 1<<62, "want the id printed as next by the previous page")
			if err := errors.Join(checkLimit(pq.limit), berr); err != nil {
				return err
			}
			return o.call("GET", "/aitoken/payments?"+query(map[string]string{"user": pq.user, "limit": pq.limit,
				"before": pq.before}), nil, printPayments, typed{"before": {"--before", pq.before}})
		}}
	payments.Flags().StringVar(&pq.user, "user", "", "Only this user's payments")
	payments.Flags().StringVar(&pq.limit, "limit", "", "Page size (default 100, at most 1000)")
	payments.Flags().StringVar(&pq.before, "before", "", "Page cursor: the id printed as next by the previous page")
	return payments
}

func (o *cliOpts) auditCmd() *cobra.Command {
	var aq struct{ user, action, limit, before string }
	audit := &cobra.Command{Use: "audit", Short: "List the audit trail: erasures, exports, retention runs", Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			_, _, berr := checkWhole("--before", aq.before, 1, 1<<62, "want the id printed as next by the previous page")
			if err := errors.Join(checkLimit(aq.limit), berr); err != nil {
				return err
			}
			return o.call("GET", "/aitoken/audit?"+query(map[string]string{"user": aq.user, "action": aq.action,
				"limit": aq.limit, "before": aq.before}), nil, printAudit,
				typed{"action": {"--action", aq.action}, "before": {"--before", aq.before}})
		}}
	audit.Flags().StringVar(&aq.user, "user", "", "Only entries about this user")
	audit.Flags().StringVar(&aq.action, "action", "", "Only this action (user.delete, user.export, retention.purge)")
	audit.Flags().StringVar(&aq.limit, "limit", "", "Page size (default 100, at most 1000)")
	audit.Flags().StringVar(&aq.before, "before", "", "Page cursor: the id printed as next by the previous page")
	return audit
}

func (o *cliOpts) reconcileCmd() *cobra.Command {
	var apply bool
	rec := &cobra.Command{Use: "reconcile", Short: "Compare the ledger with Redis; --apply rebuilds Redis", Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return o.call("POST", fmt.Sprintf("/aitoken/reconcile?apply=%t", apply), nil, printReconcile, nil)
		}}
	rec.Flags().BoolVar(&apply, "apply", false, "Rebuild Redis balances and keys from the ledger")
	return rec
}

// unknownCommand runs for a command group (aitoken, users, keys) given
// no known subcommand: with none it prints the help, with another word it
// fails, so a typo never exits 0.
func unknownCommand(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return c.Help()
	}
	return fmt.Errorf("unknown command %q for %q; see %q", args[0], c.CommandPath(), c.CommandPath()+" --help")
}

// splitList splits a comma-separated flag; empty gives an empty list.
func splitList(s string) []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(s, ",")
}

// query encodes the non-empty parameters.
func query(params map[string]string) string {
	v := url.Values{}
	for k, s := range params {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v.Encode()
}

// call sends one admin request and prints the answer. An error answer is
// told in terms of t, what the user typed.
func (o *cliOpts) call(method, uri string, body any, print func(io.Writer, []byte) error, t typed) error {
	addr, err := o.adminAddress()
	if err != nil {
		return err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, nil, rd)
	if err != nil {
		return cliError(err, addr, t)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if o.json {
		_, err = o.out.Write(b)
		return err
	}
	return print(o.out, b)
}

func (o *cliOpts) adminAddress() (string, error) {
	if o.address != "" {
		return o.address, nil
	}
	var cfg []byte
	if o.config != "" {
		var err error
		cfg, _, _, err = caddycmd.LoadConfig(o.config, o.adapter)
		if err != nil {
			return "", err
		}
	}
	return caddycmd.DetermineAdminAPIAddress("", cfg, o.config, o.adapter)
}
