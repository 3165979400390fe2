package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// BenchmarkPages times the overview and usage pages of a customer with
// 100,000 usage rows spread over the last year (the default retention),
// through the real Caddy, and reports the p95 of each:
//
//	go test -run '^$' -bench Pages ./dashboard/
func BenchmarkPages(b *testing.B) {
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile(setup{})), nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := caddy.Load(adapted, true); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = caddy.Stop() })
	email := fmt.Sprintf("bench%d@example.com", time.Now().UnixNano())
	c := newClient(b)
	if resp, body := c.do("POST", "/signup", url.Values{"email": {email}, "password": {"correct horse battery"},
		"adult": {"on"}}); resp.StatusCode != http.StatusSeeOther {
		b.Fatalf("sign-up: %d %s", resp.StatusCode, body)
	}
	user := userOf(b, email)
	store := openLedger(b)
	now := time.Now().UTC()
	const rows = 100_000
	step := 365 * 24 * time.Hour / rows
	models := []string{"gpt-x", "claude-y", "deepseek-z", "qwen-w", "glm-v", "kimi-u", "other-t"}
	batch := make([]usagelog.Record, 0, 5000)
	for i := range rows {
		batch = append(batch, usagelog.Record{RequestID: fmt.Sprintf("%s-%06d", user, i), Time: now.Add(-time.Duration(i) * step),
			User: user, KeyID: "key_bench", Model: models[i%len(models)], InputTokens: 1000, OutputTokens: 200,
			Cost: money.Nanos(1_234_567), Currency: "USD"})
		if len(batch) == cap(batch) || i == rows-1 {
			if _, err := store.InsertUsage(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	for _, page := range []string{"/", "/usage", "/usage?model=claude-y"} {
		b.Run(page, func(b *testing.B) {
			var times []time.Duration
			for b.Loop() {
				start := time.Now()
				resp, _ := c.do("GET", page, nil)
				times = append(times, time.Since(start))
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("%s: %d", page, resp.StatusCode)
				}
			}
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			b.ReportMetric(float64(times[len(times)*95/100].Microseconds())/1000, "p95-ms")
		})
	}
}
