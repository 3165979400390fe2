package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "aitoken",
		Usage: "<users|credit|keys|usage|reconcile> [args] [--address <admin>] [--json]",
		Short: "Manages aitoken users, credits, keys, usage and reconciliation",
		Long: `
Manages the aitoken gateway through the admin API of a running Caddy
(the ledger node). --address is the admin listener; by default it is found
as for "caddy reload" (the --config file's admin address, else localhost:2019).

Commands:
  users create [--id ID] [--email E] [--name N]   create a user
  users show USER                                 balance, held, currency, status
  credit USER AMOUNT [--reason R]                 credit (negative debits), e.g. 10.00
  keys create USER [--name N] [--models a,b] [--rpm N] [--tpm N] [--expires RFC3339]
                                                  mint a key; the secret is printed once
  keys list USER                                  keys without secrets
  keys revoke KEY_ID                              revoke on every node
  usage [--user U] [--key K] [--model M] [--from T] [--to T] [--limit N]
                                                  usage records, newest first (a table)
  reconcile [--apply]                             compare the ledger with Redis;
                                                  --apply rebuilds Redis from the ledger

Output is human-readable; --json prints the admin API's JSON. Exit status is
0 on success and 1 on any error (the message goes to stderr).`,
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

	users := &cobra.Command{Use: "users", Short: "Create and show users"}
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
	users.AddCommand(create, show)

	var reason string
	credit := &cobra.Command{Use: "credit USER AMOUNT", Short: "Credit a user (negative debits)", Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("POST", "/aitoken/users/"+url.PathEscape(a[0])+"/credits",
				map[string]any{"amount": a[1], "reason": reason}, printObject)
		}}
	credit.Flags().StringVar(&reason, "reason", "", "Why (kept in the ledger)")

	keys := &cobra.Command{Use: "keys", Short: "Create, list and revoke API keys"}
	var kname, models, expires string
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
			return o.call("POST", "/aitoken/keys", body, printObject)
		}}
	kcreate.Flags().StringVar(&kname, "name", "", "A name for the key")
	kcreate.Flags().StringVar(&models, "models", "", "Comma-separated models the key may use (default: all)")
	kcreate.Flags().Int64Var(&rpm, "rpm", 0, "Requests per minute (0: unlimited)")
	kcreate.Flags().Int64Var(&tpm, "tpm", 0, "Tokens per minute (0: unlimited)")
	kcreate.Flags().StringVar(&expires, "expires", "", "Expiry time, RFC 3339")
	klist := &cobra.Command{Use: "list USER", Short: "List a user's keys", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("GET", "/aitoken/keys?user="+url.QueryEscape(a[0]), nil, printObject)
		}}
	krevoke := &cobra.Command{Use: "revoke KEY_ID", Short: "Revoke a key", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("DELETE", "/aitoken/keys/"+url.PathEscape(a[0]), nil, printObject)
		}}
	keys.AddCommand(kcreate, klist, krevoke)

	var q struct{ user, key, model, from, to, limit string }
	usage := &cobra.Command{Use: "usage", Short: "List usage records", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			v := url.Values{}
			for k, s := range map[string]string{"user": q.user, "key": q.key, "model": q.model, "from": q.from, "to": q.to, "limit": q.limit} {
				if s != "" {
					v.Set(k, s)
				}
			}
			return o.call("GET", "/aitoken/usage?"+v.Encode(), nil, printUsage)
		}}
	for name, p := range map[string]*string{"user": &q.user, "key": &q.key, "model": &q.model, "from": &q.from, "to": &q.to, "limit": &q.limit} {
		usage.Flags().StringVar(p, name, "", "Filter: "+name)
	}

	var apply bool
	rec := &cobra.Command{Use: "reconcile", Short: "Compare the ledger with Redis; --apply rebuilds Redis", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return o.call("POST", fmt.Sprintf("/aitoken/reconcile?apply=%t", apply), nil, printReconcile)
		}}
	rec.Flags().BoolVar(&apply, "apply", false, "Rebuild Redis balances and keys from the ledger")

	cmd.AddCommand(users, credit, keys, usage, rec)
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

func printObject(w io.Writer, b []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		_, err = w.Write(b)
		return err
	}
	_, err := fmt.Fprintln(w, buf.String())
	return err
}

func printUsage(w io.Writer, b []byte) error {
	var out struct {
		Records []map[string]any `json:"records"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tUSER\tKEY\tMODEL\tIN\tCACHED\tOUT\tCOST\tOUTCOME")
	for _, r := range out.Records {
		est := ""
		if r["estimated"] == true {
			est = " (est.)"
		}
		fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%v\t%v\t%v\t%v%s\t%v\n", r["time"], r["user"], r["key_id"], r["model"],
			r["input_tokens"], r["cached_input_tokens"], r["output_tokens"], r["cost"], est, r["outcome"])
	}
	return tw.Flush()
}

func printReconcile(w io.Writer, b []byte) error {
	var rep reconcileReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return err
	}
	verb := "differ"
	if rep.Applied {
		verb = "differed (fixed)"
	}
	fmt.Fprintf(w, "flushed %d usage records; checked %d users and %d keys\n", rep.Flushed, rep.UsersChecked, rep.KeysChecked)
	for _, a := range rep.Accounts {
		fmt.Fprintf(w, "account %s: ledger %s, redis %s %s\n", a.User, a.Ledger, a.Redis, verb)
	}
	for _, k := range rep.Keys {
		fmt.Fprintf(w, "key %s (user %s): %s\n", k.ID, k.User, k.Problem)
	}
	if rep.InSync {
		fmt.Fprintln(w, "ledger and redis agree")
	}
	return nil
}
