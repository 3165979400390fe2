package caddymodule

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/caddyserver/caddy/v2"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/meter"
)

// The collectors are created once and registered in every config's
// registry (ctx.GetMetricsRegistry is per config), so their values survive
// reloads. Labels are bounded: price table entries (a wildcard price's
// "prefix*", never the client's model name), fixed outcomes and kinds,
// never a user or a key.
var metrics = struct {
	requests     *prometheus.CounterVec
	tokens       *prometheus.CounterVec
	cost         *prometheus.CounterVec
	holdsRefused *prometheus.CounterVec
	clamped      *prometheus.CounterVec
	rateLimited  *prometheus.CounterVec
	redisTime    *prometheus.HistogramVec
	redisErrors  *prometheus.CounterVec
	spooled      prometheus.Counter
	lost         prometheus.Counter
	stripeEvents *prometheus.CounterVec
	state        *stateCollector
}{
	requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "aitoken", Name: "requests_total",
		Help: "Requests through the aitoken handler by model and outcome (how a forwarded response ended, or the error code of a refusal).",
	}, []string{"model", "outcome"}),
	tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "aitoken", Name: "tokens_total",
		Help: "Tokens billed by model and kind (input, cached_input, cache_write, output, reasoning).",
	}, []string{"model", "kind"}),
	cost: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "aitoken", Name: "cost_nanos_total",
		Help: "Amount billed, in nanos (10^-9) of the configured currency, by model. The ledger is the record; this is for dashboards.",
	}, []string{"model"}),
	holdsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "aitoken", Name: "holds_refused_total",
		Help: "Requests refused because the balance could not cover their hold (402 insufficient_quota), by model.",
	}, []string{"model"}),
	clamped: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "aitoken", Name: "usage_clamped_total",
		Help: "Responses whose upstream usage report claimed more tokens than the request could produce and was cut to the bound, by model: a broken or dishonest upstream.",
	}, []string{"model"}),
	rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "aitoken", Name: "rate_limited_total",
		Help: "Requests refused by a key's rpm or tpm limit (429), by limit (requests or tokens).",
	}, []string{"limit"}),
	redisTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "aitoken", Name: "redis_duration_seconds",
		Help:    "Duration of each Redis round trip (a pipeline is one) by operation: authorize and settle on the request path; otherwise the background job or command.",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, .5, 1, 5},
	}, []string{"op"}),
	redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "aitoken", Name: "redis_errors_total",
		Help: "Redis commands that failed (not counting nil replies; each command of a pipeline counts), by operation.",
	}, []string{"op"}),
	spooled: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "aitoken", Name: "settlements_spooled_total",
		Help: "Settlements Redis could not take, kept in the local spool for replay.",
	}),
	lost: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "aitoken", Name: "usage_records_lost_total",
		Help: "Usage records that could be neither settled nor spooled (the spool disk failed). Alert on any.",
	}),
	stripeEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "aitoken", Name: "stripe_events_total",
		Help: "Stripe webhook events by type (handled types; others are \"other\") and result.",
	}, []string{"type", "result"}),
	state: &stateCollector{
		lag: prometheus.NewDesc("aitoken_usage_stream_lag",
			"Usage stream entries (a record, or a batch settled together) in Redis not yet read by the ledger flusher.", nil, nil),
		pending: prometheus.NewDesc("aitoken_usage_pending",
			"Usage stream entries read by the ledger flusher but not yet committed to SQLite.", nil, nil),
		spool: prometheus.NewDesc("aitoken_spool_entries",
			"Settlements waiting in the local spool for Redis.", nil, nil),
		journal: prometheus.NewDesc("aitoken_settlements_in_flight",
			"Settlements written ahead to the local journal and not yet confirmed by Redis.", nil, nil),
	},
}

// registerMetrics adds the collectors to the config's registry.
func registerMetrics(ctx caddy.Context) error {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		metrics.requests, metrics.tokens, metrics.cost, metrics.holdsRefused, metrics.clamped, metrics.rateLimited,
		metrics.redisTime, metrics.redisErrors, metrics.spooled, metrics.lost, metrics.stripeEvents, metrics.state,
	} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// countRequest records a forwarded request's outcome and what it billed.
// model is a price table entry (PriceTable.Pattern): a configured name.
func countRequest(model string, outcome meter.Outcome, t money.Tokens, reasoning int64, cost money.Nanos) {
	c := counters.of(model, outcome)
	c.requests.Inc()
	m := c.model
	m.add(kindInput, t.Input)
	m.add(kindCachedInput, t.CachedInput)
	m.add(kindCacheWrite, t.CacheWrite)
	m.add(kindOutput, t.Output)
	m.add(kindReasoning, reasoning)
	m.add(kindCost, int64(cost))
}

// counters holds the series countRequest adds to, looked up by their
// labels once per model and outcome rather than on every request. The
// keys are bounded as the labels are: price table entries and outcomes.
var counters requestCounters

// requestCounters maps a model and outcome to their series. Lookups read
// an immutable map; a new key copies it (once per key).
type requestCounters struct {
	mu sync.Mutex
	m  atomic.Pointer[map[counterKey]*outcomeCounters]
}

type counterKey struct {
	model   string
	outcome meter.Outcome
}

// outcomeCounters are the series of one model and outcome.
type outcomeCounters struct {
	requests prometheus.Counter
	model    *modelCounters
}

// modelCounters are the token and cost series of one model, each made on
// its first addition (as WithLabelValues there would), so a model shows no
// series of a kind it never billed.
type modelCounters struct {
	name   string
	series [kindCount]atomic.Pointer[counterSeries]
}

type counterSeries struct{ prometheus.Counter }

// The series of a modelCounters: tokens_total by kind, and cost.
const (
	kindInput = iota
	kindCachedInput
	kindCacheWrite
	kindOutput
	kindReasoning
	kindCost
	kindCount
)

var tokenKinds = [...]string{kindInput: "input", kindCachedInput: "cached_input", kindCacheWrite: "cache_write",
	kindOutput: "output", kindReasoning: "reasoning"}

// add adds n, if positive, to series kind.
func (m *modelCounters) add(kind int, n int64) {
	if n <= 0 {
		return
	}
	s := m.series[kind].Load()
	if s == nil {
		// Two requests racing here get the same child: either may store it.
		if kind == kindCost {
			s = &counterSeries{metrics.cost.WithLabelValues(m.name)}
		} else {
			s = &counterSeries{metrics.tokens.WithLabelValues(m.name, tokenKinds[kind])}
		}
		m.series[kind].Store(s)
	}
	s.Add(float64(n))
}

// of returns the series of model and outcome.
func (rc *requestCounters) of(model string, outcome meter.Outcome) *outcomeCounters {
	k := counterKey{model, outcome}
	if m := rc.m.Load(); m != nil {
		if c, ok := (*m)[k]; ok {
			return c
		}
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var mc *modelCounters
	m := map[counterKey]*outcomeCounters{}
	if old := rc.m.Load(); old != nil {
		if c, ok := (*old)[k]; ok {
			return c
		}
		for k2, c := range *old {
			m[k2] = c
			if k2.model == model {
				mc = c.model
			}
		}
	}
	if mc == nil {
		mc = &modelCounters{name: model}
	}
	c := &outcomeCounters{requests: metrics.requests.WithLabelValues(model, string(outcome)), model: mc}
	m[k] = c
	rc.m.Store(&m)
	return c
}

// countClamped counts a usage report cut to what its request could produce.
func countClamped(model string) { metrics.clamped.WithLabelValues(model).Inc() }

// countRefusal records a request answered with e before it was forwarded.
// model is a price table entry (PriceTable.Pattern) or "".
func countRefusal(model string, e *apiError) {
	metrics.requests.WithLabelValues(model, e.Code).Inc()
	if e == errQuota {
		metrics.holdsRefused.WithLabelValues(model).Inc()
	}
}

// redisHook times every Redis round trip into redis_duration_seconds.
type redisHook struct{}

func (redisHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		observeRedis(ctx, cmd.Name(), start, err)
		return err
	}
}

func (redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		observeRedis(ctx, "pipeline", start, nil)
		op := redisOp(ctx, "pipeline")
		for _, c := range cmds {
			if isRedisFailure(c.Err()) {
				metrics.redisErrors.WithLabelValues(op).Inc()
			}
		}
		return err
	}
}

// redisOp is the operation label of a round trip: the context's
// (billing.WithOp), or the command's name.
func redisOp(ctx context.Context, cmd string) string {
	if op := billing.OpOf(ctx); op != "" {
		return op
	}
	return strings.ToLower(cmd)
}

func observeRedis(ctx context.Context, cmd string, start time.Time, err error) {
	op := redisOp(ctx, cmd)
	metrics.redisTime.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if isRedisFailure(err) {
		metrics.redisErrors.WithLabelValues(op).Inc()
	}
}

// isRedisFailure tells the errors redis_errors_total counts from benign
// replies: a missing key (redis.Nil), a script Redis has not cached yet
// (NOSCRIPT: the script is sent again at once) and a consumer group that
// already exists (BUSYGROUP).
func isRedisFailure(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) &&
		!redis.HasErrorPrefix(err, "NOSCRIPT") && !redis.HasErrorPrefix(err, "BUSYGROUP")
}

// stripeEventType is the type label for a Stripe event: the types the
// webhook acts on (Stripe's published, fixed names), and "other".
func stripeEventType(t string) string {
	if len(t) <= 64 && (strings.HasPrefix(t, "checkout.session.") || strings.HasPrefix(t, "charge.dispute.") ||
		t == "charge.refunded") {
		return t
	}
	return "other"
}

// stateCollector reads the state gauges at scrape time from the running
// config: the usage stream's lag and pending rows, the spool and the
// settlement journal.
type stateCollector struct {
	lag, pending, spool, journal *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.pending
	ch <- c.spool
	ch <- c.journal
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	a := activeApp.Load()
	// A gateway node started while Redis was down has no settlement
	// pipeline yet: no sample until it has.
	if a == nil || a.redis == nil || !a.redis.ready.Load() {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.spool, prometheus.GaugeValue, float64(a.redis.settlements.Spooled()))
	ch <- prometheus.MustNewConstMetric(c.journal, prometheus.GaugeValue, float64(a.redis.settlements.Pending()))
	ctx, cancel := context.WithTimeout(billing.WithOp(context.Background(), "metrics"), 500*time.Millisecond)
	defer cancel()
	cmds, _ := a.redis.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, s := range billing.UsageStreams {
			p.XInfoGroups(ctx, s)
		}
		return nil
	})
	var lag, pending int64
	for _, cmd := range cmds {
		groups, err := cmd.(*redis.XInfoGroupsCmd).Result()
		if err != nil {
			return // no stream yet, or Redis unreachable: no sample rather than a wrong one
		}
		i := slices.IndexFunc(groups, func(g redis.XInfoGroup) bool { return g.Name == ledgerGroup })
		if i < 0 {
			return
		}
		if groups[i].Lag < 0 { // Redis cannot tell (entries were deleted out of order)
			lag = -1
		} else if lag >= 0 {
			lag += groups[i].Lag
		}
		pending += groups[i].Pending
	}
	if lag >= 0 {
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(lag))
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(pending))
}
