package caddymodule

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/meter"
)

// counterValue is the value of c, or -1 when it has no such series.
func counterValue(t *testing.T, c *prometheus.CounterVec, labels ...string) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	c.Collect(ch)
	close(ch)
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		match := len(d.GetLabel()) == len(labels)
		for i, l := range d.GetLabel() {
			match = match && i < len(labels) && l.GetValue() == labels[i]
		}
		if match {
			return d.GetCounter().GetValue()
		}
	}
	return -1
}

// countRequest adds to the series of the request's model and outcome, and
// makes no series for what a model never billed.
func TestCountRequestSeries(t *testing.T) {
	const model = "count-request-test"
	for range 3 {
		countRequest(model, meter.OutcomeCompleted, money.Tokens{Input: 10, Output: 5}, 0, 700)
	}
	countRequest(model, meter.OutcomeClientGone, money.Tokens{Input: 10, CachedInput: 4}, 2, 0)
	for _, c := range []struct {
		vec    *prometheus.CounterVec
		labels []string
		want   float64
	}{
		{metrics.requests, []string{model, "completed"}, 3},
		{metrics.requests, []string{model, "client_gone"}, 1},
		{metrics.tokens, []string{"input", model}, 40},
		{metrics.tokens, []string{"output", model}, 15},
		{metrics.tokens, []string{"cached_input", model}, 4},
		{metrics.tokens, []string{"reasoning", model}, 2},
		{metrics.tokens, []string{"cache_write", model}, -1},
		{metrics.cost, []string{model}, 2100},
	} {
		if got := counterValue(t, c.vec, c.labels...); got != c.want {
			t.Errorf("%v = %v, want %v (-1: no series)", c.labels, got, c.want)
		}
	}
}

func BenchmarkCountRequest(b *testing.B) {
	tokens := money.Tokens{Input: 1200, CachedInput: 1024, Output: 310}
	b.ReportAllocs()
	for b.Loop() {
		countRequest("bench-model", meter.OutcomeCompleted, tokens, 0, 123456)
	}
}
