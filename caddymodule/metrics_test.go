package caddymodule_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads the admin listener's /metrics.
func scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// metric sums the series of name whose labels include want ("k=v" pairs);
// for a histogram it sums the sample counts.
func metric(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	var sum float64
	f := fams[name]
	if f == nil {
		return 0
	}
series:
	for _, m := range f.GetMetric() {
		for _, w := range want {
			k, v, _ := strings.Cut(w, "=")
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue series
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

func TestMetricsCountRequestsAndSurviveReload(t *testing.T) {
	tc := gateway(t)
	// A first request loads the Lua scripts (a Redis that has not seen them
	// answers NOSCRIPT once), so the counts below are this test's alone.
	uw, kw := newAccount(t, "1.00", "")
	if resp, body := post(t, "/v1/chat/completions", kw.Key, `{"model":"test-model","messages":[]}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("warm-up chat: %d %s", resp.StatusCode, body)
	}
	waitUsage(t, uw.ID, 1)
	before := scrape(t)

	// One completed request: 12 input + 7 output tokens, 26000 nanos.
	u, k := newAccount(t, "1.00", `{"user":"$USER","rpm":1}`)
	windowRoom(t) // the 429 below needs both requests in one minute
	if resp, body := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model","messages":[{"role":"user","content":"hi"}]}`,
		"X-Mock-Deltas", "7"); resp.StatusCode != http.StatusOK {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	waitUsage(t, u.ID, 1)
	// An unpriced model: counted without its (client-chosen) name.
	if resp, _ := post(t, "/v1/chat/completions", k.Key, `{"model":"no-such-model-xyz","messages":[]}`); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown model: %d", resp.StatusCode)
	}
	// The key's rpm of 1 is spent (a key check does not count): a 429.
	if resp, _ := post(t, "/v1/chat/completions", k.Key, `{"model":"test-model","messages":[]}`); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second request in a minute: %d, want 429", resp.StatusCode)
	}
	// A balance that cannot cover the hold: a 402.
	_, poor := newAccount(t, "", "")
	if resp, _ := post(t, "/v1/chat/completions", poor.Key, `{"model":"test-model","messages":[]}`); resp.StatusCode != http.StatusPaymentRequired {
		t.Fatalf("no balance: %d, want 402", resp.StatusCode)
	}
	// A webhook call with a bad signature.
	if st, _ := sendEvent(t, []byte(`{"id":"evt_x","object":"event","type":"checkout.session.completed"}`), "whsec_wrong", time.Time{}); st != http.StatusBadRequest {
		t.Fatalf("bad signature: %d", st)
	}

	after := scrape(t)
	delta := func(name string, labels ...string) float64 {
		return metric(after, name, labels...) - metric(before, name, labels...)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"aitoken_requests_total", []string{"model=test-model", "outcome=completed"}, 1},
		{"aitoken_tokens_total", []string{"model=test-model", "kind=input"}, 12},
		{"aitoken_tokens_total", []string{"model=test-model", "kind=output"}, 7},
		{"aitoken_cost_nanos_total", []string{"model=test-model"}, 26000},
		{"aitoken_requests_total", []string{"model=", "outcome=model_not_found"}, 1},
		{"aitoken_requests_total", []string{"model=test-model", "outcome=rate_limit_exceeded"}, 1},
		{"aitoken_rate_limited_total", []string{"limit=requests"}, 1},
		{"aitoken_requests_total", []string{"model=test-model", "outcome=insufficient_quota"}, 1},
		{"aitoken_holds_refused_total", []string{"model=test-model"}, 1},
		{"aitoken_stripe_events_total", []string{"type=other", "result=bad_signature"}, 1},
		// Round trips before forwarding: the completed request's key is
		// new (its record read, then the hold script: 2); the
		// unknown-model key check uses the record the node has (0); the
		// limited request asks Redis for a slice of its window or runs
		// the hold script (1); the refused request's key is new (2).
		// Settle once.
		{"aitoken_redis_duration_seconds", []string{"op=authorize"}, 5},
		{"aitoken_redis_duration_seconds", []string{"op=settle"}, 1},
	} {
		if got := delta(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v grew by %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, f := range after["aitoken_requests_total"].GetMetric() {
		for _, l := range f.GetLabel() {
			if strings.Contains(l.GetValue(), "no-such-model") {
				t.Errorf("an unpriced model name became a label: %v", f)
			}
		}
	}
	for _, g := range []string{"aitoken_usage_stream_lag", "aitoken_usage_pending", "aitoken_spool_entries", "aitoken_settlements_in_flight"} {
		if after[g] == nil {
			t.Errorf("gauge %s missing", g)
		}
	}

	// A reload keeps the counts, and counting goes on.
	load(tc, config("60ms"))
	reloaded := scrape(t)
	completed := []string{"model=test-model", "outcome=completed"}
	if got, want := metric(reloaded, "aitoken_requests_total", completed...), metric(after, "aitoken_requests_total", completed...); got != want {
		t.Fatalf("after a reload requests_total{completed} = %v, want %v", got, want)
	}
	u2, k2 := newAccount(t, "1.00", "")
	if resp, _ := post(t, "/v1/chat/completions", k2.Key, `{"model":"test-model","messages":[]}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("chat after reload: %d", resp.StatusCode)
	}
	waitUsage(t, u2.ID, 1)
	if got := metric(scrape(t), "aitoken_requests_total", completed...) - metric(after, "aitoken_requests_total", completed...); got != 1 {
		t.Fatalf("requests counted after a reload: %v, want 1", got)
	}
}
