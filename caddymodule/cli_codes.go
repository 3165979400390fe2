package caddymodule

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// The CLI's prepaid codes: codes mint, codes list, codes void.

func (o *cliOpts) codesCmd() *cobra.Command {
	codes := &cobra.Command{Use: "codes", Short: "Mint, list and void prepaid codes"}
	var m struct{ amount, count, expires, note string }
	mint := &cobra.Command{Use: "mint", Short: "Mint prepaid codes of one value (the codes are shown once)", Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if m.amount == "" {
				return fmt.Errorf("missing --amount, the value of each code, like 10.00 (usage: %s)", c.UseLine())
			}
			if _, err := checkAmount("--amount", m.amount, true); err != nil {
				return err
			}
			body := map[string]any{"amount": m.amount}
			max := int64(usagelog.MaxCodesPerMint)
			if n, ok, err := checkWhole("--count", m.count, 1, max, fmt.Sprintf("want a whole number from 1 to %d", max)); err != nil {
				return err
			} else if ok {
				body["count"] = n
			}
			if m.expires != "" {
				if err := checkExpires(m.expires); err != nil {
					return err
				}
				body["expires_at"] = m.expires
			}
			if m.note != "" {
				body["note"] = m.note
			}
			return o.call("POST", "/aitoken/codes", body, printMinted, typed{"amount": {"--amount", m.amount},
				"count": {"--count", m.count}, "expires_at": {"--expires", m.expires}, "note": {"--note", m.note}})
		}}
	mint.Flags().StringVar(&m.amount, "amount", "", "The value of each code, like 10.00 (required)")
	mint.Flags().StringVar(&m.count, "count", "", "How many codes (default 1, at most "+strconv.Itoa(usagelog.MaxCodesPerMint)+")")
	mint.Flags().StringVar(&m.expires, "expires", "", "Expiry time, RFC 3339 (default: never)")
	mint.Flags().StringVar(&m.note, "note", "", "A label kept with the codes (a batch, a reseller); not shown to customers")

	var lq struct{ status, limit, cursor string }
	list := &cobra.Command{Use: "list", Short: "List codes, newest first (never their secrets)", Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := checkOneOf("--status", lq.status, usagelog.CodeUnused, usagelog.CodeRedeemed,
				usagelog.CodeVoid, usagelog.CodeExpired); err != nil {
				return err
			}
			if err := checkLimit(lq.limit); err != nil {
				return err
			}
			return o.call("GET", "/aitoken/codes?"+query(map[string]string{"status": lq.status, "limit": lq.limit,
				"cursor": lq.cursor}), nil, printCodes, typed{"cursor": {"--cursor", lq.cursor}})
		}}
	list.Flags().StringVar(&lq.status, "status", "", "Only unused, redeemed, void or expired codes")
	list.Flags().StringVar(&lq.limit, "limit", "", "Page size (default 100, at most 1000)")
	list.Flags().StringVar(&lq.cursor, "cursor", "", "Page cursor: the id printed as next by the previous page")

	void := &cobra.Command{Use: "void CODE_ID", Short: "Void an unused code", Args: argNames("CODE_ID"),
		RunE: func(c *cobra.Command, a []string) error {
			return o.call("DELETE", "/aitoken/codes/"+url.PathEscape(a[0]), nil, printObject, nil)
		}}
	codes.Args, codes.RunE = cobra.ArbitraryArgs, unknownCommand
	codes.AddCommand(mint, list, void)
	return codes
}

// codeRow is a code as the admin API answers it.
type codeRow struct {
	ID         string `json:"id"`
	Code       string `json:"code"`
	Amount     string `json:"amount"`
	Status     string `json:"status"`
	Note       string `json:"note"`
	ExpiresAt  string `json:"expires_at"`
	CreatedAt  string `json:"created_at"`
	RedeemedBy string `json:"redeemed_by"`
	RedeemedAt string `json:"redeemed_at"`
}

// printMinted prints new codes with their secrets, which are not shown
// again.
func printMinted(w io.Writer, b []byte) error {
	var out struct {
		Codes []codeRow `json:"codes"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCODE\tAMOUNT\tEXPIRES")
	for _, c := range out.Codes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.ID, c.Code, c.Amount, cmp.Or(c.ExpiresAt, "never"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d codes; they are stored hashed and cannot be shown again\n", len(out.Codes))
	return err
}

func printCodes(w io.Writer, b []byte) error {
	var out struct {
		Codes []codeRow `json:"codes"`
		Next  string    `json:"next"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAMOUNT\tSTATUS\tREDEEMED BY\tREDEEMED\tEXPIRES\tCREATED\tNOTE")
	for _, c := range out.Codes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Amount, c.Status, cmp.Or(c.RedeemedBy, "-"),
			cmp.Or(c.RedeemedAt, "-"), cmp.Or(c.ExpiresAt, "never"), c.CreatedAt, c.Note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return printNextAs(w, "cursor", out.Next)
}
