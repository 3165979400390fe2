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
		Usage: "<users|credit|keys|usage|payments|audit|reconcile> [args] [--address <admin>] [--json]",
		Short: "Manages aitoken users, credits, keys, usage, payments and reconciliation",
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
command included.

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

	users := &cobra.Command{Use: "users", Short: "Create, show, export and delete users"}
	var id, email, name string
	create := &cobra.Command{Use: "create", Short: "Create a user", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return o.call("POST", "/aitoken/users", map[string]any{"id": id, "email": email, "name": name}, printObject)
		}}
	create.Flags().StringVar(&id, "id", "", "User ID (default: generated)")
	create.Flags().StringVar(&email, "email", "", "Email address")
	create.Flags().StringVar(&name, "name", "", "Display name")
	show := &cobra.Command{Use: "show USER", Short: "Show a user and its balance", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("GET", "/aitoken/users/"+url.PathEscape(a[0]), nil, printObject)
		}}
	export := &cobra.Command{Use: "export USER", Short: "Export everything held about a user (one JSON document)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("GET", "/aitoken/users/"+url.PathEscape(a[0])+"/export", nil, printRaw)
		}}
	del := &cobra.Command{Use: "delete USER", Short: "Erase a user's personal data and revoke every key", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("DELETE", "/aitoken/users/"+url.PathEscape(a[0]), nil, printErasure)
		}}
	var lq struct{ email, status, limit, cursor string }
	list := &cobra.Command{Use: "list", Short: "List users (a page; --cursor for the next)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return o.call("GET", "/aitoken/users?"+query(map[string]string{"email": lq.email, "status": lq.status,
				"limit": lq.limit, "cursor": lq.cursor}), nil, printUsers)
		}}
	list.Flags().StringVar(&lq.email, "email", "", "Only users with this email (any letter case)")
	list.Flags().StringVar(&lq.status, "status", "", "Only active or deleted users")
	list.Flags().StringVar(&lq.limit, "limit", "", "Page size (default 100, at most 1000)")
	list.Flags().StringVar(&lq.cursor, "cursor", "", "Page cursor: the id printed as next by the previous page")
	users.Args, users.RunE = cobra.ArbitraryArgs, unknownCommand
	users.AddCommand(create, list, show, export, del)

	var reason string
	credit := &cobra.Command{Use: "credit USER AMOUNT", Short: "Credit a user (negative debits)", Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("POST", "/aitoken/users/"+url.PathEscape(a[0])+"/credits",
				map[string]any{"amount": a[1], "reason": reason}, printObject)
		}}
	credit.Flags().StringVar(&reason, "reason", "", "Why (kept in the ledger)")

	keys := &cobra.Command{Use: "keys", Short: "Create, list, update and revoke API keys"}
	var kname, models, expires, allowedIPs string
	var rpm, tpm int64
	kcreate := &cobra.Command{Use: "create USER", Short: "Mint a key (the secret is shown once)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, a []string) error {
			body := map[string]any{"user": a[0], "name": kname, "rpm": rpm, "tpm": tpm}
			if models != "" {
				body["models"] = strings.Split(models, ",")
			}
			if expires != "" {
				body["expires_at"] = expires
			}
			if allowedIPs != "" {
				body["allowed_ips"] = strings.Split(allowedIPs, ",")
			}
			return o.call("POST", "/aitoken/keys", body, printObject)
		}}
	kcreate.Flags().StringVar(&kname, "name", "", "A name for the key")
	kcreate.Flags().StringVar(&models, "models", "", "Comma-separated models the key may use (default: all)")
	kcreate.Flags().Int64Var(&rpm, "rpm", 0, "Requests per minute (0: unlimited)")
	kcreate.Flags().Int64Var(&tpm, "tpm", 0, "Tokens per minute (0: unlimited)")
	kcreate.Flags().StringVar(&expires, "expires", "", "Expiry time, RFC 3339")
	kcreate.Flags().StringVar(&allowedIPs, "allowed-ips", "", "Comma-separated client IPs or CIDR ranges the key may be used from (default: any)")
	kupdate := &cobra.Command{Use: "update KEY_ID", Short: "Change a key's name, models, limits, allowed IPs or expiry (only the flags given)",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, a []string) error {
			body := map[string]any{}
			f := c.Flags()
			if f.Changed("name") {
				body["name"] = kname
			}
			if f.Changed("models") {
				body["models"] = splitList(models)
			}
			if f.Changed("rpm") {
				body["rpm"] = rpm
			}
			if f.Changed("tpm") {
				body["tpm"] = tpm
			}
			if f.Changed("allowed-ips") {
				body["allowed_ips"] = splitList(allowedIPs)
			}
			if f.Changed("expires") {
				body["expires_at"] = expires
				if expires == "never" {
					body["expires_at"] = nil
				}
			}
			if len(body) == 0 {
				return errors.New("nothing to change: give at least one of --name, --models, --rpm, --tpm, --allowed-ips, --expires")
			}
			return o.call("PATCH", "/aitoken/keys/"+url.PathEscape(a[0]), body, printObject)
		}}
	kupdate.Flags().StringVar(&kname, "name", "", "A name for the key")
	kupdate.Flags().StringVar(&models, "models", "", "Comma-separated models the key may use (empty: all)")
	kupdate.Flags().Int64Var(&rpm, "rpm", 0, "Requests per minute (0: unlimited)")
	kupdate.Flags().Int64Var(&tpm, "tpm", 0, "Tokens per minute (0: unlimited)")
	kupdate.Flags().StringVar(&allowedIPs, "allowed-ips", "", "Comma-separated client IPs or CIDR ranges (empty: any)")
	kupdate.Flags().StringVar(&expires, "expires", "", "Expiry time, RFC 3339, or never")
	klist := &cobra.Command{Use: "list USER", Short: "List a user's keys", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("GET", "/aitoken/keys?user="+url.QueryEscape(a[0]), nil, printKeys)
		}}
	krevoke := &cobra.Command{Use: "revoke KEY_ID", Short: "Revoke a key", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("DELETE", "/aitoken/keys/"+url.PathEscape(a[0]), nil, printObject)
		}}
	keys.Args, keys.RunE = cobra.ArbitraryArgs, unknownCommand
	keys.AddCommand(kcreate, klist, kupdate, krevoke)

	var q struct{ user, key, model, from, to, limit, before string }
	usage := &cobra.Command{Use: "usage", Short: "List usage records; usage summary adds them up", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return o.call("GET", "/aitoken/usage?"+query(map[string]string{"user": q.user, "key": q.key, "model": q.model,
				"from": q.from, "to": q.to, "limit": q.limit, "before": q.before}), nil, printUsage)
		}}
	for name, p := range map[string]*string{"user": &q.user, "key": &q.key, "model": &q.model, "from": &q.from, "to": &q.to, "limit": &q.limit} {
		usage.Flags().StringVar(p, name, "", "Filter: "+name)
	}
	usage.Flags().StringVar(&q.before, "before", "", "Page cursor: the request_id printed as next by the previous page")
	var sq struct{ user, from, to, groupBy string }
	summary := &cobra.Command{Use: "summary", Short: "Totals of requests, tokens and cost", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return o.call("GET", "/aitoken/usage/summary?"+query(map[string]string{"user": sq.user, "from": sq.from,
				"to": sq.to, "group_by": sq.groupBy}), nil, printSummary)
		}}
	summary.Flags().StringVar(&sq.user, "user", "", "Only this user")
	summary.Flags().StringVar(&sq.from, "from", "", "From this time (RFC 3339 or a date), inclusive")
	summary.Flags().StringVar(&sq.to, "to", "", "To this time (RFC 3339 or a date), exclusive")
	summary.Flags().StringVar(&sq.groupBy, "group-by", "", "Group by model or day (UTC); default: one total")
	usage.AddCommand(summary)

	var pq struct{ user, limit, before string }
	payments := &cobra.Command{Use: "payments", Short: "List Stripe payments and refunds, newest first", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return o.call("GET", "/aitoken/payments?"+query(map[string]string{"user": pq.user, "limit": pq.limit,
				"before": pq.before}), nil, printPayments)
		}}
	payments.Flags().StringVar(&pq.user, "user", "", "Only this user's payments")
	payments.Flags().StringVar(&pq.limit, "limit", "", "Page size (default 100, at most 1000)")
	payments.Flags().StringVar(&pq.before, "before", "", "Page cursor: the id printed as next by the previous page")

	var aq struct{ user, action, limit, before string }
	audit := &cobra.Command{Use: "audit", Short: "List the audit trail: erasures, exports, retention runs", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return o.call("GET", "/aitoken/audit?"+query(map[string]string{"user": aq.user, "action": aq.action,
				"limit": aq.limit, "before": aq.before}), nil, printAudit)
		}}
	audit.Flags().StringVar(&aq.user, "user", "", "Only entries about this user")
	audit.Flags().StringVar(&aq.action, "action", "", "Only this action (user.delete, user.export, retention.purge)")
	audit.Flags().StringVar(&aq.limit, "limit", "", "Page size (default 100, at most 1000)")
	audit.Flags().StringVar(&aq.before, "before", "", "Page cursor: the id printed as next by the previous page")

	var apply bool
	rec := &cobra.Command{Use: "reconcile", Short: "Compare the ledger with Redis; --apply rebuilds Redis", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return o.call("POST", fmt.Sprintf("/aitoken/reconcile?apply=%t", apply), nil, printReconcile)
		}}
	rec.Flags().BoolVar(&apply, "apply", false, "Rebuild Redis balances and keys from the ledger")

	cmd.AddCommand(users, credit, keys, usage, payments, audit, rec)
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

// call sends one admin request and prints the answer.
func (o *cliOpts) call(method, uri string, body any, print func(io.Writer, []byte) error) error {
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
		return err
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
