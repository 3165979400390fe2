package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"time"
)

// measure runs the measurements against the running caddy, in order:
// warm-up, JSON throughput with one customer and with many (with CPU and
// Redis round trips), streamed throughput, latency, SSE timing, memory
// per open stream and, when asked, a CPU profile. The latency and SSE
// phases start with the bench customer a returning one.
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
	returning := func(phase string) (warmResult, error) {
		w, err := l.warmReturning(ctx, cfg.Concurrency)
		if err != nil {
			return w, fmt.Errorf("%s: warm-up: %w", phase, err)
		}
		if w.last != 0 && !math.IsNaN(w.last) {
			logf("%s: the bench customer still made %.0f request-path Redis round trips in the last of %d warm-up rounds",
				phase, w.last, w.rounds)
		}
		return w, nil
	}

	var err error
	if res.json.warm, err = returning("throughput"); err != nil {
		return err
	}
	logf("throughput: %d rounds of %s per site, %d clients", cfg.Rounds, cfg.Duration, cfg.Concurrency)
	warm := res.json.warm
	if res.json, err = measureJSON(ctx, l, cfg.Concurrency, cfg.Rounds, cfg.Duration); err != nil {
		return fmt.Errorf("throughput: %w", err)
	}
	res.json.warm = warm

	if len(e.customers) > 0 {
		res.customers = len(e.customers)
		if res.many, err = manyCustomers(ctx, cfg, e, e.customers, logf); err != nil {
			return fmt.Errorf("%d customers: %w", len(e.customers), err)
		}
	}

	if res.streamed, err = streamedThroughput(ctx, cfg, e, logf); err != nil {
		return fmt.Errorf("streamed throughput: %w", err)
	}

	if _, err := returning("latency"); err != nil {
		return err
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
	res.rtt = timeRoundTrips(before, after)
	res.latencyN = cfg.LatencyRequests
	if res.ping, err = pingFloor(ctx, e.redis.Addr, cfg.LatencyRequests/2); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	for _, m := range modes {
		res.latency[m] = percentiles(lat[m])
	}

	if _, err := returning("SSE"); err != nil {
		return err
	}
	logf("SSE: %d streams per site, %d at once, %d deltas %s apart", cfg.SSEStreams, cfg.SSEConcurrency, cfg.SSEDeltas, cfg.SSEDelay)
	if before, err = e.scrape(ctx); err != nil {
		return err
	}
	st, err := l.sse(ctx, cfg.SSEStreams, cfg.SSEConcurrency, cfg.SSEDeltas, cfg.SSEDelay)
	if err != nil {
		return fmt.Errorf("SSE: %w", err)
	}
	if after, err = e.scrape(ctx); err != nil {
		return err
	}
	res.sseRTT = timeRoundTrips(before, after)
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
		site := "aitoken"
		if cfg.ProfileBare {
			site = "bare"
		}
		pl := l
		if cfg.ProfileCustomers {
			if len(e.customers) == 0 {
				return errors.New("-profile-customers needs -customers")
			}
			pl = newLoader(e, cfg.Concurrency)
			pl.keys = e.customers
			if _, err := pl.warmReturning(ctx, cfg.Concurrency); err != nil {
				return fmt.Errorf("profile: warm-up: %w", err)
			}
			site += fmt.Sprintf(" (%d customers)", len(e.customers))
		}
		logf("profiling caddy for %s under %s load", cfg.ProfileTime, site)
		if err := profile(ctx, pl, cfg, logf); err != nil {
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

// profile loads the aitoken site (the bare one with -profile-bare) while
// caddy's admin API records a CPU profile, and saves it to cfg.CPUProfile.
func profile(ctx context.Context, l *loader, cfg config, logf func(string, ...any)) error {
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
	site := metered
	if cfg.ProfileBare {
		site = bare
	}
	c0, err := l.e.counters(ctx)
	if err != nil {
		return err
	}
	w, err := l.window(ctx, site, conc, cfg.ProfileTime, do)
	if err != nil {
		return err
	}
	c1, err := l.e.counters(ctx)
	if err != nil {
		return err
	}
	logf("profiled %d jobs; CPU per job, µs: caddy %.1f, Redis %.1f, mock %.1f, load generator %.1f", w.requests,
		perThousand(w.cpu.caddy, w.requests), perThousand(w.cpu.redis, w.requests),
		perThousand(w.cpu.mock, w.requests), perThousand(w.cpu.harness, w.requests))
	logCounters(c0, c1, w.requests, logf)
	a := <-ch
	if a.err != nil {
		return a.err
	}
	if err = os.WriteFile(cfg.CPUProfile, a.b, 0o644); err != nil {
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
