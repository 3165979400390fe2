package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// sseTiming is what one stream showed the client: the time to its first
// body byte and the gaps between consecutive content deltas.
type sseTiming struct {
	ttfb time.Duration
	gaps []time.Duration
}

// firstByteReader notes when the first body byte arrived.
type firstByteReader struct {
	r     io.Reader
	first time.Time
}

func (f *firstByteReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 && f.first.IsZero() {
		f.first = time.Now()
	}
	return n, err
}

// openStream sends a streaming chat completion through site m and checks
// the answer is an SSE stream.
func (l *loader) openStream(ctx context.Context, c *http.Client, m mode, hdr map[string]string) (*http.Response, time.Time, error) {
	req, err := l.newRequest(ctx, m, sseBody, hdr)
	if err != nil {
		return nil, time.Time{}, err
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return nil, start, fmt.Errorf("%s stream: %w", m, err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		resp.Body.Close()
		return nil, start, fmt.Errorf("%s stream: status %d, %s: %s", m, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return resp, start, nil
}

// stream reads one whole SSE stream of deltas content deltas through site
// m, noting when each data line arrived. The first data event is the role
// chunk; the next deltas are the content deltas the mock paces.
func (l *loader) stream(ctx context.Context, m mode, deltas int, delay time.Duration) (sseTiming, error) {
	hdr := map[string]string{"X-Mock-Deltas": strconv.Itoa(deltas), "X-Mock-Delay": delay.String()}
	resp, start, err := l.openStream(ctx, l.clients[m], m, hdr)
	if err != nil {
		return sseTiming{}, err
	}
	defer resp.Body.Close()
	fb := &firstByteReader{r: resp.Body}
	br := bufio.NewReader(fb)
	var events []time.Time
	done := false
	for !done {
		line, err := br.ReadSlice('\n')
		now := time.Now()
		if rest, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
			done = bytes.HasPrefix(rest, []byte("[DONE]"))
			events = append(events, now)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return sseTiming{}, fmt.Errorf("%s stream: %w", m, err)
		}
	}
	if !done || len(events) < deltas+1 {
		return sseTiming{}, fmt.Errorf("%s stream: %d data events, done=%v; want the role chunk, %d deltas and [DONE]", m, len(events), done, deltas)
	}
	// Read on to the body's end, as SDKs do, so that the connection is
	// kept for the next request: closing it earlier would make the
	// transport drop the connection, and the next stream pay a new one.
	if _, err := io.Copy(io.Discard, br); err != nil {
		return sseTiming{}, fmt.Errorf("%s stream: after [DONE]: %w", m, err)
	}
	t := sseTiming{ttfb: fb.first.Sub(start)}
	for k := 2; k <= deltas; k++ {
		t.gaps = append(t.gaps, events[k].Sub(events[k-1]))
	}
	return t, nil
}

// sseStats gathers every stream's timings of one site.
type sseStats struct {
	ttfb []time.Duration
	gaps []time.Duration
}

// sse reads perMode streams through each site with conc streams in
// flight. Streams alternate between the sites (bare, aitoken, aitoken,
// bare, …), so both sites share the same moments of machine load.
func (l *loader) sse(ctx context.Context, perMode, conc, deltas int, delay time.Duration) ([2]sseStats, error) {
	var (
		out      [2]sseStats
		mu       sync.Mutex
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	total := int64(2 * perMode)
	for range conc {
		wg.Go(func() {
			for {
				j := next.Add(1) - 1
				if j >= total || ctx.Err() != nil {
					return
				}
				m := mode((j ^ j>>1) & 1) // 0 1 1 0 0 1 1 0 …
				t, err := l.stream(ctx, m, deltas, delay)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				mu.Lock()
				out[m].ttfb = append(out[m].ttfb, t.ttfb)
				out[m].gaps = append(out[m].gaps, t.gaps...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return out, firstErr
	}
	return out, ctx.Err()
}

// memResult is caddy's Go memory (heap and stacks in use, after GC) and
// goroutines per open stream.
type memResult struct {
	bytesPerStream      float64
	goroutinesPerStream float64
}

// openStreamsMemory holds n streams open through site m (the mock holds
// each after its first delta until the client goes away), measures caddy's
// memory against the idle baseline taken just before, then closes them and
// waits until caddy's goroutines are back to the baseline.
func (l *loader) openStreamsMemory(ctx context.Context, m mode, n int) (memResult, error) {
	var res memResult
	base, g0, err := l.e.goMemory(ctx)
	if err != nil {
		return res, err
	}
	c := newClient(n, 0)
	defer c.CloseIdleConnections()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hdr := map[string]string{"X-Mock-Hold": "1", "X-Mock-Deltas": "20"}
	ready := make(chan error, n)
	sem := make(chan struct{}, 64) // open at most this many at once
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			sem <- struct{}{}
			resp, _, err := l.openStream(sctx, c, m, hdr)
			if err == nil {
				defer resp.Body.Close()
				err = readDataLines(resp.Body, 2) // the role chunk and the first delta
			}
			<-sem
			ready <- err
			if err == nil {
				<-sctx.Done()
			}
		})
	}
	for range n {
		if err = <-ready; err != nil {
			cancel()
			wg.Wait()
			return res, fmt.Errorf("holding %s streams open: %w", m, err)
		}
	}
	used, g1, err := l.e.goMemory(ctx)
	cancel()
	wg.Wait()
	if err != nil {
		return res, err
	}
	// The gateway reads an upstream to its end after the client left
	// (on_client_gone finish): let the held streams go on and end.
	if err := l.e.releaseMock(ctx); err != nil {
		return res, err
	}
	res.bytesPerStream = (used - base) / float64(n)
	res.goroutinesPerStream = (g1 - g0) / float64(n)
	return res, l.waitGoroutines(ctx, g0)
}

// readDataLines reads until n SSE data lines have arrived.
func readDataLines(r io.Reader, n int) error {
	br := bufio.NewReader(r)
	for n > 0 {
		line, err := br.ReadSlice('\n')
		if bytes.HasPrefix(line, []byte("data: ")) {
			n--
		}
		if err != nil && n > 0 {
			return err
		}
	}
	return nil
}

// idleUpstreamGoroutines is what caddy may keep after streams that ended
// normally: reverse_proxy keeps up to 32 idle connections to the upstream
// (its default), two goroutines each. Streams the gateway read to their
// end after the client left (on_client_gone finish) end that way.
const idleUpstreamGoroutines = 2 * 32

// waitGoroutines waits (up to 30s) until caddy runs no more goroutines than
// before the streams were opened, give or take a few background ones and
// the idle upstream connections.
func (l *loader) waitGoroutines(ctx context.Context, want float64) error {
	want += idleUpstreamGoroutines
	deadline := time.Now().Add(30 * time.Second)
	for {
		ss, err := l.e.scrape(ctx)
		if err != nil {
			return err
		}
		g, _ := value(ss, "go_goroutines", nil)
		if g <= want+8 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("caddy still runs %.0f goroutines 30s after the streams closed (%.0f before)", g, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
