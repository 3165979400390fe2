package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds the JSON throughput scenarios: one customer, and many
// customers whose keys the clients use round-robin, each made a
// returning customer (key cached, balance lease taken) before measuring.

// jsonResult is one JSON throughput scenario's outcome, per site.
type jsonResult struct {
	throughput [2]float64 // requests per second
	requests   [2]int64   // requests in the windows
	cpuPer1k   [2]float64 // caddy CPU ms per 1000 requests (= µs per request)
	redisPer1k [2]float64 // redis-server CPU ms per 1000 requests
	totalPer1k [2]float64 // CPU ms of every process per 1000 requests
	rt         roundTrips // the aitoken site's Redis round trips
	scriptsPer float64    // EVALSHA+EVAL calls per aitoken request
	warm       warmResult // making the customers returning ones
	rounds     []float64  // each round's aitoken/bare throughput ratio
}

// ratio is the aitoken site's share of bare throughput.
func (j jsonResult) ratio() float64 { return j.throughput[metered] / j.throughput[bare] }

// serverPer1k is caddy's and Redis's CPU ms per 1000 requests of site m:
// what the gateway's servers spend (µs per request).
func (j jsonResult) serverPer1k(m mode) float64 { return j.cpuPer1k[m] + j.redisPer1k[m] }

// measureJSON runs the alternating JSON throughput windows of l and
// measures CPU and, over the same span once settlements went quiet, the
// gateway's Redis round trips and Redis's script calls.
func measureJSON(ctx context.Context, l *loader, conc, rounds int, d time.Duration) (jsonResult, error) {
	var res jsonResult
	e := l.e
	ops0, err := e.settledOps(ctx)
	if err != nil {
		return res, err
	}
	scripts0, err := redisScriptCalls(e.redis.Addr)
	if err != nil {
		return res, err
	}
	tp, ratios, err := l.throughput(ctx, conc, rounds, d, l.doJSON)
	if err != nil {
		return res, err
	}
	ops1, err := e.settledOps(ctx)
	if err != nil {
		return res, err
	}
	scripts1, err := redisScriptCalls(e.redis.Addr)
	if err != nil {
		return res, err
	}
	for _, m := range modes {
		res.requests[m] = tp[m].requests
		res.throughput[m] = float64(tp[m].requests) / tp[m].busy.Seconds()
		res.cpuPer1k[m] = perThousand(tp[m].cpu.caddy, tp[m].requests)
		res.redisPer1k[m] = perThousand(tp[m].cpu.redis, tp[m].requests)
		res.totalPer1k[m] = perThousand(tp[m].cpu.total(), tp[m].requests)
	}
	res.rounds = ratios
	res.scriptsPer = float64(scripts1-scripts0) / float64(tp[metered].requests)
	res.rt = perRequest(ops0, ops1, tp[metered].requests)
	return res, nil
}

// warmResult is how warm-up made the customers returning ones.
type warmResult struct {
	rounds   int     // rounds of requests sent
	requests int64   // requests sent
	last     float64 // request-path round trips in the last round (NaN: unknown)
}

// maxWarmRounds bounds warmReturning.
const maxWarmRounds = 6

// warmReturning makes l's customers returning ones: it sends rounds of
// requests through the aitoken site, every key at least once a round,
// until a round makes no request-path Redis round trip (each key's record
// is cached and its balance lease taken; a customer's first two requests
// go to Redis, the second asking for the lease in the background), at
// most maxWarmRounds.
func (l *loader) warmReturning(ctx context.Context, conc int) (warmResult, error) {
	res := warmResult{last: math.NaN()}
	n := max(len(l.keys), 4*conc)
	for res.rounds < maxWarmRounds {
		if res.rounds > 0 {
			// The background lease takes the last round asked for.
			time.Sleep(20 * time.Millisecond)
		}
		before, err := l.e.scrape(ctx)
		if err != nil {
			return res, err
		}
		if err := l.requests(ctx, metered, n, conc); err != nil {
			return res, err
		}
		after, err := l.e.scrape(ctx)
		if err != nil {
			return res, err
		}
		res.rounds++
		res.requests += int64(n)
		ops0, ops1 := redisOps(before), redisOps(after)
		if ops1 == nil { // no metric: a customer is returning by its third request
			if res.rounds == 3 {
				return res, nil
			}
			continue
		}
		if res.last = requestPathCount(ops1) - requestPathCount(ops0); res.last == 0 {
			return res, nil
		}
	}
	return res, nil
}

// requests sends n JSON requests through site m, conc at a time.
func (l *loader) requests(ctx context.Context, m mode, n, conc int) error {
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(conc, n) {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				if _, err := l.do(ctx, m); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// manyCustomers is the many-customer JSON throughput scenario: the
// clients use keys round-robin, each key's customer made a returning one
// first. It measures right after the warm-up, so that it ends before the
// gateway's key records go stale (a minute after Redis confirmed them).
func manyCustomers(ctx context.Context, cfg config, e *env, keys []string, logf func(string, ...any)) (jsonResult, error) {
	l := newLoader(e, cfg.Concurrency)
	l.keys = keys
	defer func() {
		for _, c := range l.clients {
			c.CloseIdleConnections()
		}
	}()
	if err := l.requests(ctx, bare, 4*cfg.Concurrency, cfg.Concurrency); err != nil {
		return jsonResult{}, fmt.Errorf("warm-up: %w", err)
	}
	warm, err := l.warmReturning(ctx, cfg.Concurrency)
	if err != nil {
		return jsonResult{}, fmt.Errorf("warm-up: %w", err)
	}
	logf("%d customers: warm-up %d rounds of every key (%d requests), last round %s request-path Redis round trips",
		len(keys), warm.rounds, warm.requests, num(warm.last, 0))
	logf("%d customers: %d rounds of %s per site, %d clients, keys round-robin",
		len(keys), cfg.CustomerRounds, cfg.Duration, cfg.Concurrency)
	res, err := measureJSON(ctx, l, cfg.Concurrency, cfg.CustomerRounds, cfg.Duration)
	res.warm = warm
	return res, err
}
