package caddymodule_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMetricsModelLabelIsBoundedUnderAPrefixPrice sends requests with a
// wrong key for many model names that a "pre-*" price matches. Anyone can
// send them (no valid key needed), so each distinct name must not become a
// model label: the series would grow without bound (and a name may be as
// long as max_request_body allows).
func TestMetricsModelLabelIsBoundedUnderAPrefixPrice(t *testing.T) {
	gateway(t)
	tag := fmt.Sprintf("pre-card%d-", time.Now().UnixNano())
	const n = 20
	for i := range n {
		resp, body := post(t, "/v1/chat/completions", "sk-not-a-key-"+tag, `{"model":"`+tag+fmt.Sprint(i)+`","messages":[]}`)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong key: %d %s", resp.StatusCode, body)
		}
	}
	seen := map[string]bool{}
	for _, name := range []string{"aitoken_requests_total", "aitoken_tokens_total", "aitoken_cost_nanos_total", "aitoken_holds_refused_total"} {
		for _, m := range scrape(t)[name].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "model" && strings.HasPrefix(l.GetValue(), tag) {
					seen[l.GetValue()] = true
				}
			}
		}
	}
	if len(seen) > 1 {
		t.Fatalf("%d client-chosen model names became label values (one per request with a wrong key); want at most the price's own name", len(seen))
	}
}
