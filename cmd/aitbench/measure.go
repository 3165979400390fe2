package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"time"
)

// measure runs the measurements against the running caddy, in order:
// warm-up, JSON throughput (with CPU and Redis round trips), streamed
// throughput, latency, SSE timing, memory per open stream and, when asked,
// a CPU profile.
func measure(ctx context.Context, cfg config, e *env, res *results, logf func(string, ...any)) error {
	l := newLoader(e, cfg.Concurrency)

	logf("warming up (%s per site)", cfg.Warmup)
	for _, m := range modes {
		if _, err := l.window(ctx, m, cfg.Concurrency, cfg.Warmup, l.doJSON); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	if _, err := l.sse(ctx, cfg.SSEConcurrency, cfg.SSEConcurrency, cfg.SSEDeltas, cfg.SSEDelay); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}

	ops0, err := e.settledOps(ctx)
	if err != nil {
		return err
	}
	scripts0, err := redisScriptCalls(e.redis.Addr)
	if err != nil {
		return err
	}
	logf("throughput: %d rounds of %s per site, %d clients", cfg.Rounds, cfg.Duration, cfg.Concurrency)
	tp, err := l.throughput(ctx, cfg.Concurrency, cfg.Rounds, cfg.Duration, l.doJSON)
	if err != nil {
		return fmt.Errorf("throughput: %w", err)
	}
	ops1, err := e.settledOps(ctx)
	if err != nil {
		return err
	}
	scripts1, err := redisScriptCalls(e.redis.Addr)
	if err != nil {
		return err
	}
	for _, m := range modes {
		res.requests[m] = tp[m].requests
		res.throughput[m] = float64(tp[m].requests) / tp[m].elapsed.Seconds()
		res.cpuPer1k[m] = perThousand(tp[m].cpu.caddy, tp[m].requests)
		res.totalPer1k[m] = perThousand(tp[m].cpu.total(), tp[m].requests)
	}
	n := float64(tp[metered].requests)
	res.redisPer1k = perThousand(tp[metered].cpu.redis, tp[metered].requests)
	res.scriptsPer = float64(scripts1-scripts0) / n
	res.rtRequest, res.rtAll = math.NaN(), math.NaN()
	if ops0 != nil && ops1 != nil {
		res.rtOps = map[string]float64{}
		var all float64
		for op, v := range ops1 {
			if op == "metrics" { // our own scrapes of /metrics
				continue
			}
			d := (v - ops0[op]) / n
			if d > 0 {
				res.rtOps[op] = d
			}
			all += d
		}
		res.rtRequest, res.rtAll = res.rtOps["authorize"]+res.rtOps["settle"], all
	}

	if res.streamed, err = streamedThroughput(ctx, cfg, e, logf); err != nil {
		return fmt.Errorf("streamed throughput: %w", err)
	}

	logf("latency: %d requests per site, one at a time, alternating", cfg.LatencyRequests)
	before, err := e.scrape(ctx)
	if err != nil {
		return err
	}
	lat, err := l.latency(ctx, cfg.LatencyRequests)
	if err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	after, err := e.scrape(ctx)
	if err != nil {
		return err
	}
	res.rtt = meanRoundTrips(before, after)
	res.latencyN = cfg.LatencyRequests
	if res.ping, err = pingFloor(ctx, e.redis.Addr, cfg.LatencyRequests/2); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	for _, m := range modes {
		res.latency[m] = percentiles(lat[m])
	}

	logf("SSE: %d streams per site, %d at once, %d deltas %s apart", cfg.SSEStreams, cfg.SSEConcurrency, cfg.SSEDeltas, cfg.SSEDelay)
	st, err := l.sse(ctx, cfg.SSEStreams, cfg.SSEConcurrency, cfg.SSEDeltas, cfg.SSEDelay)
	if err != nil {
		return fmt.Errorf("SSE: %w", err)
	}
	for _, m := range modes {
		res.ttfb[m], res.gap[m] = percentiles(st[m].ttfb), percentiles(st[m].gaps)
		res.streams[m], res.gaps[m] = len(st[m].ttfb), len(st[m].gaps)
	}

	logf("memory: %d open streams, %d time(s) per site", cfg.OpenStreams, cfg.MemRounds)
	for _, c := range l.clients {
		c.CloseIdleConnections()
	}
	for i := range 2 * cfg.MemRounds {
		m := mode((i ^ i>>1) & 1) // bare, aitoken, aitoken, bare, …
		r, err := l.openStreamsMemory(ctx, m, cfg.OpenStreams)
		if err != nil {
			return fmt.Errorf("memory: %w", err)
		}
		res.mem[m].bytesPerStream += r.bytesPerStream / float64(cfg.MemRounds)
		res.mem[m].goroutinesPerStream += r.goroutinesPerStream / float64(cfg.MemRounds)
	}

	if cfg.CPUProfile != "" {
		logf("profiling caddy for %s under aitoken load", cfg.ProfileTime)
		if err := profile(ctx, l, cfg); err != nil {
			return fmt.Errorf("profile: %w", err)
		}
		logf("wrote %s (go tool pprof %s)", cfg.CPUProfile, cfg.CPUProfile)
	}
	return nil
}

// perThousand is CPU milliseconds per 1000 requests.
func perThousand(cpu time.Duration, requests int64) float64 {
	if requests == 0 {
		return math.NaN()
	}
	return float64(cpu) / float64(time.Millisecond) / float64(requests) * 1000
}

// meanRoundTrips is the mean duration in ms of the gateway's request-path
// Redis round trips between two scrapes, by op; nil without the metric.
func meanRoundTrips(before, after []sample) map[string]float64 {
	n0, n1 := redisOps(before), redisOps(after)
	t0, t1 := byOp(before, redisOpsTime), byOp(after, redisOpsTime)
	if n1 == nil || t1 == nil {
		return nil
	}
	m := map[string]float64{}
	for _, op := range []string{"authorize", "settle"} {
		if n := n1[op] - n0[op]; n > 0 {
			m[op] = (t1[op] - t0[op]) / n * 1000
		}
	}
	return m
}

// settledOps returns the gateway's Redis round trips by op once
// settlement (which may finish after the response) has gone quiet: no
// settlement in flight (when the gateway reports that gauge) and the
// settle count unchanged over 50ms. It returns nil when the gateway does
// not export the metric.
func (e *env) settledOps(ctx context.Context) (map[string]float64, error) {
	deadline := time.Now().Add(10 * time.Second)
	var last map[string]float64
	for {
		ss, err := e.scrape(ctx)
		if err != nil {
			return nil, err
		}
		ops := redisOps(ss)
		if ops == nil {
			return nil, nil
		}
		inFlight, _ := value(ss, "aitoken_settlements_in_flight", nil)
		if last != nil && ops["settle"] == last["settle"] && inFlight == 0 || time.Now().After(deadline) {
			return ops, nil
		}
		last = ops
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// profile loads the aitoken site while caddy's admin API records a CPU
// profile, and saves it to cfg.CPUProfile.
func profile(ctx context.Context, l *loader, cfg config) error {
	type answer struct {
		b   []byte
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", l.e.adminURL, int(cfg.ProfileTime.Seconds()))
		resp, err := http.Get(url)
		if err != nil {
			ch <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET /debug/pprof/profile: %d %s", resp.StatusCode, b)
		}
		ch <- answer{b, err}
	}()
	conc, do := cfg.Concurrency, l.doJSON
	if cfg.ProfileStreams {
		conc, do = cfg.StreamConcurrency, l.streamJob(cfg.SSEDeltas, cfg.SSEDelay)
	}
	if _, err := l.window(ctx, metered, conc, cfg.ProfileTime, do); err != nil {
		return err
	}
	a := <-ch
	if a.err != nil {
		return a.err
	}
	if err := os.WriteFile(cfg.CPUProfile, a.b, 0o644); err != nil {
		return err
	}
	// The allocations since caddy started (mostly this load), beside it.
	resp, err := http.Get(l.e.adminURL + "/debug/pprof/allocs")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(cfg.CPUProfile+".allocs", b, 0o644)
}
