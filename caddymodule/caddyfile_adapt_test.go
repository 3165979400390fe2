package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var update = flag.Bool("update", false, "rewrite the JSON of testdata/caddyfile_adapt/*.caddyfiletest with what the Caddyfile adapter gives")

// adaptDir holds the adapt goldens, in the form of Caddy's own
// caddytest/integration/caddyfile_adapt: a Caddyfile, a line of ten
// dashes, then the JSON it adapts to (indented with tabs).
const adaptDir = "testdata/caddyfile_adapt"

// TestCaddyfileAdapt adapts each golden's Caddyfile and compares the JSON.
// Regenerate them with: go test ./caddymodule -run Adapt -update
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(adaptDir, "*.caddyfiletest"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no goldens in %s: %v", adaptDir, err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".caddyfiletest"), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			text := strings.ReplaceAll(string(data), "\r\n", "\n")
			input, want, ok := strings.Cut(text, "----------")
			if !ok {
				t.Fatalf("%s: no ---------- line between the Caddyfile and the JSON", path)
			}
			input, want = strings.TrimSpace(input)+"\n", strings.TrimSpace(want)
			got, err := adapt(input, "Caddyfile")
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if *update {
				if err := os.WriteFile(path, []byte(input+"----------\n"+got+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Errorf("%s: the adapted JSON differs (-want +got; run go test ./caddymodule -run Adapt -update to accept):\n%s",
					path, lineDiff(want, got))
			}
		})
	}
}

// TestCaddyfileAdaptErrors pins the message each Caddyfile mistake gets, after
// Caddy's "parsing caddyfile tokens for " that begins them all.
func TestCaddyfileAdaptErrors(t *testing.T) {
	global := func(opts string) string { return "{\n\taitoken {\n" + opts + "\n\t}\n}\n\n:8080 {\n\trespond ok\n}\n" }
	stripe := func(opts string) string { return global("\t\tstripe {\n" + opts + "\n\t\t}") }
	site := func(directives string) string { return "{\n\taitoken\n}\n\n:8080 {\n" + directives + "\n}\n" }
	handler := func(opts string) string { return site("\taitoken {\n" + opts + "\n\t}") }
	for _, tc := range []struct {
		name, input, want string
	}{
		// The global option.
		{"global argument", "{\n\taitoken on\n}\n",
			`'aitoken': wrong argument count or unexpected line ending after 'on', at Caddyfile:2`},
		{"global unknown option", global("\t\tredis_url redis://x"),
			`'aitoken': unrecognized aitoken option "redis_url", at Caddyfile:3`},
		{"global missing argument", global("\t\tredis"),
			`'aitoken': wrong argument count or unexpected line ending after 'redis', at Caddyfile:3`},
		{"global two arguments", global("\t\tdatabase a.db b.db"),
			`'aitoken': wrong argument count or unexpected line ending after 'b.db', at Caddyfile:3`},
		{"currency missing", global("\t\tcurrency"),
			`'aitoken': wrong argument count or unexpected line ending after 'currency', at Caddyfile:3`},
		{"spool_dir missing", global("\t\tspool_dir"),
			`'aitoken': wrong argument count or unexpected line ending after 'spool_dir', at Caddyfile:3`},
		{"pricing_file missing", global("\t\tpricing_file"),
			`'aitoken': wrong argument count or unexpected line ending after 'pricing_file', at Caddyfile:3`},
		{"flush_interval bad", global("\t\tflush_interval soon"),
			`'aitoken': flush_interval "soon": want a positive duration like 1s, at Caddyfile:3`},
		{"flush_interval zero", global("\t\tflush_interval 0s"),
			`'aitoken': flush_interval "0s": want a positive duration like 1s, at Caddyfile:3`},
		{"usage_retention short", global("\t\tusage_retention 1h"),
			`'aitoken': usage_retention "1h": want a duration of at least a day, like 365d or 8760h, at Caddyfile:3`},
		{"payment_retention bad", global("\t\tpayment_retention forever"),
			`'aitoken': payment_retention "forever": want a duration of at least a day, like 365d or 8760h, at Caddyfile:3`},
		{"log_client_ip bad", global("\t\tlog_client_ip maybe"),
			`'aitoken': log_client_ip "maybe": want on or off, at Caddyfile:3`},
		{"sentinel no addresses", global("\t\tredis_sentinel mymaster"),
			`'aitoken': redis_sentinel: want a master name and sentinel addresses, at Caddyfile:3`},
		{"sentinel unknown option", global("\t\tredis_sentinel m 127.0.0.1:26379 {\n\t\t\tusername bob\n\t\t}"),
			`'aitoken': unrecognized redis_sentinel option "username", at Caddyfile:4`},
		{"sentinel password missing", global("\t\tredis_sentinel m 127.0.0.1:26379 {\n\t\t\tpassword\n\t\t}"),
			`'aitoken': wrong argument count or unexpected line ending after 'password', at Caddyfile:4`},
		// price lines.
		{"price no model", global("\t\tprice"),
			`'aitoken': wrong argument count or unexpected line ending after 'price', at Caddyfile:3`},
		{"price bad amount", global("\t\tprice m input 1,50 output 2"),
			`'aitoken': price m input "1,50": want a non-negative decimal like 0.14, at Caddyfile:3`},
		{"price negative amount", global("\t\tprice m input -1 output 2"),
			`'aitoken': price m input "-1": want a non-negative decimal like 0.14, at Caddyfile:3`},
		{"price value missing", global("\t\tprice m input 1 output"),
			`'aitoken': price m: output needs a value, at Caddyfile:3`},
		{"price unknown field", global("\t\tprice m input 1 reasoning 2 output 2"),
			`'aitoken': price m: unknown field "reasoning" (want input, cached_input, cache_write, output), at Caddyfile:3`},
		{"price no output", global("\t\tprice m input 1"),
			`'aitoken': price m: input and output are required, at Caddyfile:3`},
		{"price twice", global("\t\tprice m input 1 output 2\n\t\tprice m input 1 output 3"),
			`'aitoken': price m: given twice, at Caddyfile:4`},
		// The stripe block.
		{"stripe argument", global("\t\tstripe test {\n\t\t}"),
			`'aitoken': wrong argument count or unexpected line ending after 'test', at Caddyfile:3`},
		{"stripe unknown option", stripe("\t\t\tpublishable_key pk"),
			`'aitoken': unrecognized stripe option "publishable_key", at Caddyfile:4`},
		{"stripe secret_key missing", stripe("\t\t\tsecret_key"),
			`'aitoken': wrong argument count or unexpected line ending after 'secret_key', at Caddyfile:4`},
		{"stripe webhook_secret two", stripe("\t\t\twebhook_secret a b"),
			`'aitoken': wrong argument count or unexpected line ending after 'b', at Caddyfile:4`},
		{"stripe min_topup zero", stripe("\t\t\tmin_topup 0"),
			`'aitoken': stripe min_topup "0": want a positive decimal like 5.00, at Caddyfile:4`},
		{"stripe min_topup bad amount", stripe("\t\t\tmin_topup 5,00"),
			`'aitoken': stripe min_topup "5,00": want a positive decimal like 5.00, at Caddyfile:4`},
		{"stripe max_topup negative", stripe("\t\t\tmax_topup -1"),
			`'aitoken': stripe max_topup "-1": want a positive decimal like 10000.00, at Caddyfile:4`},
		{"stripe max_topup exponent", stripe("\t\t\tmax_topup 1e9"),
			`'aitoken': stripe max_topup "1e9": want a positive decimal like 10000.00, at Caddyfile:4`},
		{"stripe topup_rate missing", stripe("\t\t\ttopup_rate"),
			`'aitoken': stripe topup_rate: want <count> [<window>], e.g. 10 1h, or off, at Caddyfile:4`},
		{"stripe topup_rate zero", stripe("\t\t\ttopup_rate 0"),
			`'aitoken': stripe topup_rate "0": want a count from 1 to 1000000, or off, at Caddyfile:4`},
		{"stripe topup_rate word", stripe("\t\t\ttopup_rate ten"),
			`'aitoken': stripe topup_rate "ten": want a count from 1 to 1000000, or off, at Caddyfile:4`},
		{"stripe topup_rate short window", stripe("\t\t\ttopup_rate 10 1ms"),
			`'aitoken': stripe topup_rate window "1ms": want a duration from 1s to 744h0m0s, at Caddyfile:4`},
		{"stripe topup_rate three", stripe("\t\t\ttopup_rate 10 1h extra"),
			`'aitoken': stripe topup_rate: want <count> [<window>], e.g. 10 1h, or off, at Caddyfile:4`},
		// The aitoken handler.
		{"handler argument", site("\taitoken on"),
			`'aitoken': wrong argument count or unexpected line ending after 'on', at Caddyfile:6`},
		{"handler unknown option", handler("\t\tmodel gpt-4o"),
			`'aitoken': unrecognized aitoken option "model", at Caddyfile:7`},
		{"models missing", handler("\t\tmodels"),
			`'aitoken': wrong argument count or unexpected line ending after 'models', at Caddyfile:7`},
		{"max_request_body bad", handler("\t\tmax_request_body lots"),
			`'aitoken': max_request_body "lots": want a size like 8MiB, at Caddyfile:7`},
		{"max_request_body zero", handler("\t\tmax_request_body 0"),
			`'aitoken': max_request_body "0": want a size like 8MiB, at Caddyfile:7`},
		{"reserve_output_tokens negative", handler("\t\treserve_output_tokens -1"),
			`'aitoken': reserve_output_tokens "-1": want a positive integer, at Caddyfile:7`},
		{"max_output_tokens missing", handler("\t\tmax_output_tokens"),
			`'aitoken': wrong argument count or unexpected line ending after 'max_output_tokens', at Caddyfile:7`},
		{"max_output_tokens bad", handler("\t\tmax_output_tokens many"),
			`'aitoken': max_output_tokens "many": want a positive integer, at Caddyfile:7`},
		{"on_redis_error bad", handler("\t\ton_redis_error retry"),
			`'aitoken': on_redis_error "retry": want deny or allow, at Caddyfile:7`},
		{"inject_stream_usage bad", handler("\t\tinject_stream_usage yes"),
			`'aitoken': inject_stream_usage "yes": want on or off, at Caddyfile:7`},
		{"alias one name", handler("\t\talias deepseek-chat"),
			`'aitoken': wrong argument count or unexpected line ending after 'deepseek-chat', at Caddyfile:7`},
		{"alias twice", handler("\t\talias a m\n\t\talias a n"),
			`'aitoken': alias "a" given twice, at Caddyfile:8`},
		{"passthrough missing", handler("\t\tpassthrough"),
			`'aitoken': wrong argument count or unexpected line ending after 'passthrough', at Caddyfile:7`},
		{"on_client_gone missing", handler("\t\ton_client_gone"),
			`'aitoken': wrong argument count or unexpected line ending after 'on_client_gone', at Caddyfile:7`},
		{"on_client_gone bad", handler("\t\ton_client_gone drop"),
			`'aitoken': on_client_gone "drop": want finish or cancel, at Caddyfile:7`},
		{"on_client_gone cancel timeout", handler("\t\ton_client_gone cancel 5m"),
			`'aitoken': on_client_gone cancel takes no timeout, at Caddyfile:7`},
		{"on_client_gone bad timeout", handler("\t\ton_client_gone finish soon"),
			`'aitoken': on_client_gone finish "soon": want a duration such as 2m, at Caddyfile:7`},
		// aitoken_account and aitoken_stripe take nothing.
		{"account argument", site("\taitoken_account /v1/account extra"),
			`'aitoken_account': wrong argument count or unexpected line ending after 'extra', at Caddyfile:6`},
		{"account option", site("\taitoken_account {\n\t\tcurrency USD\n\t}"),
			`'aitoken_account': aitoken_account takes no options, at Caddyfile:7`},
		{"stripe webhook argument", site("\taitoken_stripe /stripe/webhook extra"),
			`'aitoken_stripe': wrong argument count or unexpected line ending after 'extra', at Caddyfile:6`},
		{"stripe webhook option", site("\taitoken_stripe {\n\t\twebhook_secret x\n\t}"),
			`'aitoken_stripe': aitoken_stripe takes no options; configure the stripe block of the aitoken global option, at Caddyfile:7`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := adapt(tc.input, "Caddyfile")
			if err == nil {
				t.Fatalf("no error adapting:\n%s", tc.input)
			}
			if want := "parsing caddyfile tokens for " + tc.want; err.Error() != want {
				t.Errorf("error:\n\t%s\nwant:\n\t%s", err, want)
			}
		})
	}
}

// TestCaddyfileExampleAdapts adapts the repository's Caddyfile.example, as
// `make run` would, and checks the aitoken parts reached the JSON.
func TestCaddyfileExampleAdapts(t *testing.T) {
	t.Setenv("UPSTREAM", "127.0.0.1:9000")
	b, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	got, err := adapt(string(b), "Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			AIToken *struct {
				Redis  string                     `json:"redis"`
				Prices map[string]json.RawMessage `json:"prices"`
			} `json:"aitoken"`
		} `json:"apps"`
	}
	if err := json.Unmarshal([]byte(got), &cfg); err != nil {
		t.Fatal(err)
	}
	if a := cfg.Apps.AIToken; a == nil || a.Redis != "{env.REDIS_URL}" || len(a.Prices) == 0 {
		t.Fatalf("the aitoken app did not reach the JSON:\n%s", got)
	}
	for _, h := range []string{`"handler": "aitoken"`, `"handler": "aitoken_account"`, `"handler": "aitoken_dashboard"`,
		`"dial": "127.0.0.1:9000"`, `"deepseek-chat": "deepseek-v4-flash"`} {
		if !strings.Contains(got, h) {
			t.Errorf("no %s in the adapted JSON:\n%s", h, got)
		}
	}
}

// adapt runs Caddy's Caddyfile adapter and returns the JSON indented with
// tabs. A warning (an unformatted Caddyfile, say) is an error here.
func adapt(input, filename string) (string, error) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		return "", fmt.Errorf("no caddyfile adapter")
	}
	out, warnings, err := adapter.Adapt([]byte(input), map[string]any{"filename": filename})
	if err != nil {
		return "", err
	}
	if len(warnings) > 0 {
		w := warnings[0]
		return "", fmt.Errorf("warning: %s:%d: %s: %s", w.File, w.Line, w.Directive, w.Message)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "\t"); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// lineDiff returns the lines only in want ("-") and only in got ("+"),
// with two lines of context around each change.
func lineDiff(want, got string) string {
	a, b := strings.Split(want, "\n"), strings.Split(got, "\n")
	// lcs[i][j] is the length of the longest common subsequence of a[i:] and b[j:].
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		op   byte
		text string
	}
	var lines []line
	for i, j := 0, 0; i < len(a) || j < len(b); {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			lines = append(lines, line{' ', a[i]})
			i, j = i+1, j+1
		case i < len(a) && (j == len(b) || lcs[i+1][j] >= lcs[i][j+1]):
			lines = append(lines, line{'-', a[i]})
			i++
		default:
			lines = append(lines, line{'+', b[j]})
			j++
		}
	}
	const context = 2
	changed := func(k int) bool {
		for d := -context; d <= context; d++ {
			if k+d >= 0 && k+d < len(lines) && lines[k+d].op != ' ' {
				return true
			}
		}
		return false
	}
	var sb strings.Builder
	skipped := false
	for k, l := range lines {
		if !changed(k) {
			if !skipped {
				sb.WriteString("  …\n")
			}
			skipped = true
			continue
		}
		skipped = false
		fmt.Fprintf(&sb, "%c %s\n", l.op, l.text)
	}
	return sb.String()
}

// Without UPSTREAM (a reload from a shell that lacks it), adapting the
// example fails and says what is missing, instead of leaving a
// reverse_proxy with no upstream.
func TestCaddyfileExampleNeedsUpstream(t *testing.T) {
	t.Setenv("UPSTREAM", "")
	os.Unsetenv("UPSTREAM")
	b, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := adapt(string(b), "Caddyfile.example"); err == nil || !strings.Contains(err.Error(), "export-UPSTREAM-first") {
		t.Fatalf("adapted without UPSTREAM: err %v\n%s", err, got)
	}
}
