package caddymodule

// The CLI's output: each admin answer printed for a human (tables, or
// "field  value" lines for one object); --json prints the answer as is.

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/cnaitoken/caddy-aitoken/accounting"
)

// printObject prints a JSON object as "field  value" lines in its own
// order; a list or object value is shown compact, a string unquoted.
func printObject(w io.Writer, b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		_, err = w.Write(b)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\n", tok, plainValue(v))
	}
	return tw.Flush()
}

// plainValue is v for a human: a string without its quotes, null as "-",
// anything else as compact JSON.
func plainValue(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	if string(v) == "null" {
		return "-"
	}
	var buf bytes.Buffer
	if json.Compact(&buf, v) != nil {
		return string(v)
	}
	return buf.String()
}

// printKeys prints a user's keys as a table.
func printKeys(w io.Writer, b []byte) error {
	var out struct {
		Keys []struct {
			ID         string   `json:"id"`
			Name       string   `json:"name"`
			Prefix     string   `json:"prefix"`
			Status     string   `json:"status"`
			Models     []string `json:"models"`
			RPM        int64    `json:"rpm"`
			TPM        int64    `json:"tpm"`
			AllowedIPs []string `json:"allowed_ips"`
			ExpiresAt  string   `json:"expires_at"`
			CreatedAt  string   `json:"created_at"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	list := func(l []string) string { return cmp.Or(strings.Join(l, ","), "any") }
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tPREFIX\tSTATUS\tMODELS\tRPM\tTPM\tALLOWED IPS\tEXPIRES\tCREATED")
	for _, k := range out.Keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", k.ID, k.Name, k.Prefix, k.Status, list(k.Models),
			k.RPM, k.TPM, list(k.AllowedIPs), cmp.Or(k.ExpiresAt, "never"), k.CreatedAt)
	}
	return tw.Flush()
}

func printUsage(w io.Writer, b []byte) error {
	var out struct {
		Records []map[string]any `json:"records"`
		Next    string           `json:"next"`
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
	if err := tw.Flush(); err != nil {
		return err
	}
	return printNext(w, out.Next)
}

// printNext tells how to get the next page: the cursor flag (--before,
// or --cursor for users) and its value.
func printNext(w io.Writer, next string) error { return printNextAs(w, "before", next) }

func printNextAs(w io.Writer, flag, next string) error {
	if next == "" {
		return nil
	}
	_, err := fmt.Fprintf(w, "more: --%s %s\n", flag, next)
	return err
}

// printRaw prints the answer as it came (an export is already one JSON
// document).
func printRaw(w io.Writer, b []byte) error {
	_, err := w.Write(b)
	return err
}

func printErasure(w io.Writer, b []byte) error {
	var e struct {
		User            string `json:"user"`
		AlreadyDeleted  bool   `json:"already_deleted"`
		KeysRevoked     int64  `json:"keys_revoked"`
		KeysInRedis     int    `json:"keys_revoked_in_redis"`
		UsageAnonymised int64  `json:"usage_rows_anonymised"`
		PaymentsKept    int64  `json:"payments_kept"`
		AuditID         int64  `json:"audit_id"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return err
	}
	again := ""
	if e.AlreadyDeleted {
		again = " (was already erased)"
	}
	_, err := fmt.Fprintf(w, "user %s erased%s: %d keys revoked (%d revoked in redis), %d usage rows anonymised, %d payment records kept; audit entry %d\n",
		e.User, again, e.KeysRevoked, e.KeysInRedis, e.UsageAnonymised, e.PaymentsKept, e.AuditID)
	return err
}

func printSummary(w io.Writer, b []byte) error {
	var out struct {
		GroupBy  string `json:"group_by"`
		Currency string `json:"currency"`
		Groups   []struct {
			Model     string `json:"model"`
			Day       string `json:"day"`
			Requests  int64  `json:"requests"`
			Input     int64  `json:"input_tokens"`
			Cached    int64  `json:"cached_input_tokens"`
			Output    int64  `json:"output_tokens"`
			Reasoning int64  `json:"reasoning_tokens"`
			Cost      string `json:"cost"`
		} `json:"groups"`
		Total struct {
			Requests  int64  `json:"requests"`
			Input     int64  `json:"input_tokens"`
			Cached    int64  `json:"cached_input_tokens"`
			Output    int64  `json:"output_tokens"`
			Reasoning int64  `json:"reasoning_tokens"`
			Cost      string `json:"cost"`
		} `json:"total"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tREQUESTS\tIN\tCACHED\tOUT\tREASONING\tCOST (%s)\n", strings.ToUpper(cmp.Or(out.GroupBy, "all")), out.Currency)
	for _, g := range out.Groups {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", g.Model+g.Day, g.Requests, g.Input, g.Cached, g.Output, g.Reasoning, g.Cost)
	}
	t := out.Total
	fmt.Fprintf(tw, "TOTAL\t%d\t%d\t%d\t%d\t%d\t%s\n", t.Requests, t.Input, t.Cached, t.Output, t.Reasoning, t.Cost)
	return tw.Flush()
}

func printUsers(w io.Writer, b []byte) error {
	var out struct {
		Users []struct {
			ID        string `json:"id"`
			Email     string `json:"email"`
			Name      string `json:"name"`
			Status    string `json:"status"`
			CreatedAt string `json:"created_at"`
		} `json:"users"`
		Next string `json:"next"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tEMAIL\tNAME\tSTATUS\tCREATED")
	for _, u := range out.Users {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.ID, u.Email, u.Name, u.Status, u.CreatedAt)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return printNextAs(w, "cursor", out.Next)
}

func printPayments(w io.Writer, b []byte) error {
	var out struct {
		Payments []struct {
			ID        int64  `json:"id"`
			CreatedAt string `json:"created_at"`
			User      string `json:"user"`
			Kind      string `json:"kind"`
			Amount    string `json:"amount"`
			Currency  string `json:"currency"`
			Credited  string `json:"credited"`
			Status    string `json:"status"`
			Ref       string `json:"ref"`
		} `json:"payments"`
		Next string `json:"next"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCREATED\tUSER\tKIND\tAMOUNT\tCREDITED\tSTATUS\tREF")
	for _, p := range out.Payments {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s %s\t%s\t%s\t%s\n", p.ID, p.CreatedAt, p.User, p.Kind, p.Amount, p.Currency,
			p.Credited, p.Status, p.Ref)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return printNext(w, out.Next)
}

func printAudit(w io.Writer, b []byte) error {
	var out struct {
		Entries []struct {
			ID     int64           `json:"id"`
			Time   string          `json:"time"`
			Action string          `json:"action"`
			User   string          `json:"user"`
			Detail json.RawMessage `json:"detail"`
		} `json:"entries"`
		Next string `json:"next"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tACTION\tUSER\tDETAIL")
	for _, e := range out.Entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.ID, e.Time, e.Action, e.User, e.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return printNext(w, out.Next)
}

func printReconcile(w io.Writer, b []byte) error {
	var rep accounting.Report
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
