package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// mode is the route a request goes through.
type mode int

const (
	bare    mode = iota // reverse_proxy alone
	metered             // aitoken, then the same reverse_proxy
)

func (m mode) String() string { return [...]string{"bare", "aitoken"}[m] }

// modes is both routes, in a fixed order.
var modes = [2]mode{bare, metered}

// Request bodies: a short chat, as JSON and as an SSE stream.
var (
	jsonBody = []byte(`{"model":"` + benchModel + `","messages":[{"role":"system","content":"You are a helpful assistant."},` +
		`{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64}`)
	sseBody = []byte(`{"model":"` + benchModel + `","messages":[{"role":"system","content":"You are a helpful assistant."},` +
		`{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"stream":true}`)
)

// loader sends benchmark requests to either site over keep-alive
// connections, one connection pool per site. Its requests take the keys
// in turn, round-robin (the bench user's one key unless set otherwise).
type loader struct {
	e       *env
	clients [2]*http.Client
	urls    [2]string
	keys    []string
	next    atomic.Uint64
}

func newLoader(e *env, conns int) *loader {
	return &loader{
		e:       e,
		clients: [2]*http.Client{newClient(conns, time.Minute), newClient(conns, time.Minute)},
		urls:    [2]string{e.bareURL, e.aitokenURL},
		keys:    []string{e.key},
	}
}

// key is the API key of the next request: the keys in turn.
func (l *loader) key() string {
	return l.keys[(l.next.Add(1)-1)%uint64(len(l.keys))]
}

// newClient is a keep-alive client that holds up to conns idle connections
// per host and never asks for compression. timeout 0 means none.
func newClient(conns int, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0, // no global bound
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     10 * time.Minute,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// newRequest builds a chat completion request for site m; stream requests
// ask the mock for deltas with a pause between them.
func (l *loader) newRequest(ctx context.Context, m mode, body []byte, hdr map[string]string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", l.urls[m]+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+l.key())
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return req, nil
}

// do sends one JSON chat completion through site m, reads the whole answer
// and returns how long that took.
func (l *loader) do(ctx context.Context, m mode) (time.Duration, error) {
	req, err := l.newRequest(ctx, m, jsonBody, nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	resp, err := l.clients[m].Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", m, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return 0, fmt.Errorf("%s: status %d: %s", m, resp.StatusCode, b)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, fmt.Errorf("%s: reading body: %w", m, err)
	}
	return time.Since(start), nil
}

// windowResult is what one throughput window did.
type windowResult struct {
	requests int64 // jobs completed: requests or streams
	elapsed  time.Duration
	busy     time.Duration // elapsed, stretched to take in the work left behind (window)
	cpu      cpuTimes      // of every process, and caddy's and Redis's work left behind
}

// job is one unit of closed-loop work against site m: a JSON request
// (loader.doJSON) or a whole SSE stream (streamJob).
type job func(ctx context.Context, m mode) error

// doJSON is the JSON throughput job: one chat completion, read to its end.
func (l *loader) doJSON(ctx context.Context, m mode) error {
	_, err := l.do(ctx, m)
	return err
}

// window runs conc closed-loop workers against site m for d, each doing
// one job after the other: each starts jobs until d has passed; jobs under
// way then are finished and counted. The elapsed time runs to the last
// completion. It measures the CPU time of every process over the same span,
// then waits for the gateway to go quiet and adds what caddy and Redis
// spent meanwhile (see below).
func (l *loader) window(ctx context.Context, m mode, conc int, d time.Duration, do job) (windowResult, error) {
	var res windowResult
	cpu0, err := l.e.cpuTimes()
	if err != nil {
		return res, err
	}
	var (
		n        atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	start := time.Now()
	end := start.Add(d)
	for range conc {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				if err := do(ctx, m); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	cpu1, err := l.e.cpuTimes()
	if err != nil {
		return res, err
	}
	// What the window's requests left to do in the background (lingering
	// settlements, the ledger flusher) is done before the next window, and
	// charged to this one: its CPU is added, and busy is the window's time
	// stretched by the share that work adds to the window's CPU, as if it
	// had run during the window on the same busy machine (the time of a
	// CPU-bound window). Otherwise it would run in the next window, often
	// the other site's.
	if err := l.e.quiet(ctx); err != nil {
		return res, err
	}
	cpu2, err := l.e.cpuTimes()
	if err != nil {
		return res, err
	}
	during, after := cpu1.sub(cpu0), cpu2.sub(cpu1)
	res.requests, res.cpu = n.Load(), during.add(cpuTimes{caddy: after.caddy, redis: after.redis})
	res.elapsed, res.busy = elapsed, elapsed
	if d := during.total(); d > 0 {
		res.busy = time.Duration(float64(elapsed) * float64(res.cpu.total()) / float64(d))
	}
	return res, nil
}

// throughput alternates windows of d between the sites, rounds times each,
// starting with a different site every round, and sums each site's windows.
// It also returns each round's ratio of CPU-bound rates (requests over
// busy time), aitoken's over bare's: their spread shows how much the
// machine's speed moved during the run.
func (l *loader) throughput(ctx context.Context, conc, rounds int, d time.Duration, do job) ([2]windowResult, []float64, error) {
	var sum [2]windowResult
	ratios := make([]float64, 0, rounds)
	for r := range rounds {
		order := modes
		if r%2 == 1 {
			order = [2]mode{metered, bare}
		}
		var rate [2]float64
		for _, m := range order {
			w, err := l.window(ctx, m, conc, d, do)
			if err != nil {
				return sum, ratios, err
			}
			rate[m] = float64(w.requests) / w.busy.Seconds()
			sum[m].requests += w.requests
			sum[m].elapsed += w.elapsed
			sum[m].busy += w.busy
			sum[m].cpu = sum[m].cpu.add(w.cpu)
		}
		ratios = append(ratios, rate[metered]/rate[bare])
	}
	return sum, ratios, nil
}

// latency sends perMode requests to each site one at a time, alternating
// site by site (bare then aitoken, then aitoken then bare, …), and returns
// every request's latency per site.
func (l *loader) latency(ctx context.Context, perMode int) ([2][]time.Duration, error) {
	var lat [2][]time.Duration
	for i := range perMode {
		order := modes
		if i%2 == 1 {
			order = [2]mode{metered, bare}
		}
		for _, m := range order {
			d, err := l.do(ctx, m)
			if err != nil {
				return lat, err
			}
			lat[m] = append(lat[m], d)
		}
	}
	return lat, nil
}
