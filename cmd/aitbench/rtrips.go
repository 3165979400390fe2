package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// requestPathOps are the labels of the Redis round trips a request makes
// before its response: admission in Redis (authorize), which a returning
// customer's request skips when its node admits it from a balance lease.
// Everything else happens off the request's path: settlement batches
// (settle) after the response, balance leases (lease) and the ledger
// flusher (labelled by their command's name) in the background.
var requestPathOps = []string{billing.OpAuthorize}

// ownOps are round trips the harness itself causes: the state gauges its
// scrapes of /metrics read.
var ownOps = map[string]bool{"metrics": true}

// roundTrips is the gateway's Redis round trips per aitoken request over
// a span.
type roundTrips struct {
	// ops is per op label; nil when the gateway exports no metric.
	ops map[string]float64
	// requestPath sums requestPathOps; all sums every op but ownOps.
	requestPath, all float64
}

// perRequest is the round trips between two counts by op, per request;
// NaN figures when either count is missing.
func perRequest(ops0, ops1 map[string]float64, requests int64) roundTrips {
	rt := roundTrips{requestPath: math.NaN(), all: math.NaN()}
	if ops0 == nil || ops1 == nil || requests == 0 {
		return rt
	}
	n := float64(requests)
	rt.ops = map[string]float64{}
	rt.all = 0
	for op, v := range ops1 {
		if ownOps[op] {
			continue
		}
		if d := (v - ops0[op]) / n; d > 0 {
			rt.ops[op] = d
			rt.all += d
		}
	}
	rt.requestPath = 0
	for _, op := range requestPathOps {
		rt.requestPath += rt.ops[op]
	}
	return rt
}

// op is the round trips per request of one op label (NaN without the
// metric).
func (rt roundTrips) op(name string) float64 {
	if rt.ops == nil {
		return math.NaN()
	}
	return rt.ops[name]
}

// requestPathCount sums the request-path round trips in a count by op.
func requestPathCount(ops map[string]float64) float64 {
	var n float64
	for _, op := range requestPathOps {
		n += ops[op]
	}
	return n
}

// opTiming is the round trips of one op in a span and their mean
// duration in ms (as the gateway timed them).
type opTiming struct {
	n      float64
	meanMs float64
}

// timeRoundTrips is, by op (ours left out), how many Redis round trips
// the gateway made between two scrapes and their mean duration; nil
// without the metric.
func timeRoundTrips(before, after []sample) map[string]opTiming {
	n0, n1 := redisOps(before), redisOps(after)
	t0, t1 := byOp(before, redisOpsTime), byOp(after, redisOpsTime)
	if n1 == nil || t1 == nil {
		return nil
	}
	m := map[string]opTiming{}
	for op, v := range n1 {
		if ownOps[op] {
			continue
		}
		t := opTiming{n: v - n0[op]}
		if t.n > 0 {
			t.meanMs = (t1[op] - t0[op]) / t.n * 1000
		}
		m[op] = t
	}
	for _, op := range requestPathOps { // named even when none happened
		if _, ok := m[op]; !ok {
			m[op] = opTiming{}
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
		if last != nil && ops[billing.OpSettle] == last[billing.OpSettle] && inFlight == 0 || time.Now().After(deadline) {
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

// quiet waits until the gateway has done the work the last load left
// behind: no settlement in flight and every usage stream empty, that is
// every record stored in the ledger (the flusher deletes an entry once it
// is). It reads the streams first and scrapes the metrics only when they
// are empty, so that the wait itself costs caddy little.
func (e *env) quiet(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		empty := true
		for _, s := range billing.UsageStreams {
			n, err := e.rdb.XLen(ctx, s).Result()
			if err != nil {
				return err
			}
			empty = empty && n == 0
		}
		if empty {
			ss, err := e.scrape(ctx)
			if err != nil {
				return err
			}
			if inFlight, _ := value(ss, "aitoken_settlements_in_flight", nil); inFlight == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the gateway still had settlements or usage records to store 30s after the load ended")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// roundsLine sums up per-round throughput ratios: lowest, median, highest.
func roundsLine(ratios []float64) string {
	if len(ratios) == 0 {
		return "none"
	}
	r := slices.Sorted(slices.Values(ratios))
	med := r[len(r)/2]
	if len(r)%2 == 0 {
		med = (r[len(r)/2-1] + r[len(r)/2]) / 2
	}
	return fmt.Sprintf("lowest %.1f %%, median %.1f %%, highest %.1f %% (%d rounds)", 100*r[0], 100*med, 100*r[len(r)-1], len(r))
}
