package main

import (
	"context"
	"fmt"
	"time"
)

// streamJob is the streamed throughput job: one SSE chat stream of deltas
// content deltas delay apart, read to its end.
func (l *loader) streamJob(deltas int, delay time.Duration) job {
	return func(ctx context.Context, m mode) error {
		_, err := l.stream(ctx, m, deltas, delay)
		return err
	}
}

// streamedResult is the streamed throughput phase's outcome per site.
type streamedResult struct {
	streams  [2]int64   // streams completed in the windows
	rate     [2]float64 // streams per second
	cpuPer1k [2]float64 // caddy CPU ms per 1000 streams
	streamMs [2]float64 // mean time per stream, ms: in flight × window time / streams
	cores    [2]float64 // mean CPU cores all processes used in the windows
}

// streamedThroughput measures throughput with paced responses: a pool of
// cfg.StreamConcurrency connections per site (its own, so that every
// stream in flight keeps its connection), warmed by one short window per
// site, then windows alternating between the sites exactly as the JSON
// throughput does, each client reading one whole SSE stream after another.
func streamedThroughput(ctx context.Context, cfg config, e *env, logf func(string, ...any)) (streamedResult, error) {
	var res streamedResult
	conc := cfg.StreamConcurrency
	l := newLoader(e, conc)
	defer func() {
		for _, c := range l.clients {
			c.CloseIdleConnections()
		}
	}()
	do := l.streamJob(cfg.SSEDeltas, cfg.SSEDelay)
	for _, m := range modes {
		if _, err := l.window(ctx, m, conc, cfg.Warmup/4, do); err != nil {
			return res, fmt.Errorf("warm-up: %w", err)
		}
	}
	logf("streamed throughput: %d rounds of %s per site, %d streams in flight, %d deltas %s apart",
		cfg.Rounds, cfg.Duration, conc, cfg.SSEDeltas, cfg.SSEDelay)
	tp, _, err := l.throughput(ctx, conc, cfg.Rounds, cfg.Duration, do)
	if err != nil {
		return res, err
	}
	for _, m := range modes {
		res.streams[m] = tp[m].requests
		res.rate[m] = float64(tp[m].requests) / tp[m].elapsed.Seconds()
		res.cpuPer1k[m] = perThousand(tp[m].cpu.caddy, tp[m].requests)
		res.streamMs[m] = float64(conc) * tp[m].elapsed.Seconds() * 1000 / float64(tp[m].requests)
		res.cores[m] = tp[m].cpu.total().Seconds() / tp[m].elapsed.Seconds()
	}
	return res, nil
}
