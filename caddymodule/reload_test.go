package caddymodule_test

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/openai/openai-go/v3/option"
)

// TestReloadDuringTrafficLosesNoUsage reloads the config (a real /load with a
// changed config) again and again while streams run, and checks that every
// request the clients saw succeed has exactly one usage row, that no row is
// written twice, and that the rows sum to exactly what the balance moved.
// (A reload can refuse a connection before Caddy reads a request from it:
// those requests never reach the gateway, and the client sees an error.)
func TestReloadDuringTrafficLosesNoUsage(t *testing.T) {
	tc := gateway(t)
	u, k := newAccount(t, "10.00", "")
	// A fresh connection per request: a reload closes idle keep-alive
	// connections, and a POST raced onto one fails before Caddy sees it
	// (net/http does not retry POSTs). That is Caddy's and the client's
	// business; this test is about requests that reach the gateway.
	c := client(k.Key, option.WithHTTPClient(&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}))

	const workers, perWorker = 8, 6
	var mu sync.Mutex
	var succeeded []string
	var failed atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				var raw *http.Response
				stream := c.Chat.Completions.NewStreaming(context.Background(), chatParams("test-model"),
					option.WithHeader("X-Mock-Deltas", "4"), option.WithHeader("X-Mock-Delay", "5ms"),
					option.WithResponseInto(&raw))
				n := 0
				for stream.Next() {
					n++
				}
				if stream.Err() != nil || n < 4 || raw == nil {
					failed.Add(1)
					t.Logf("request failed during reload after %d chunks: %v", n, stream.Err())
					continue
				}
				mu.Lock()
				succeeded = append(succeeded, raw.Header.Get("X-Request-Id"))
				mu.Unlock()
			}
		}()
	}
	reloads := 0
	go func() {
		defer close(stop)
		for i := 0; i < 6; i++ {
			flush := []string{"70ms", "40ms"}[i%2]
			startOnce.Lock()
			load(tc, config(flush))
			startOnce.Unlock()
			reloads++
		}
	}()
	wg.Wait()
	<-stop
	if reloads != 6 {
		t.Fatalf("reloads: %d", reloads)
	}
	if len(succeeded) < workers*perWorker/2 {
		t.Fatalf("only %d of %d requests succeeded", len(succeeded), workers*perWorker)
	}
	recs := waitUsage(t, u.ID, len(succeeded))
	var sum int64
	rows := map[string]usageRecord{}
	for _, r := range recs {
		if _, dup := rows[r.RequestID]; dup {
			t.Fatalf("duplicate usage row %s", r.RequestID)
		}
		rows[r.RequestID] = r
		sum += mustNanos(t, r.Cost)
	}
	const perRequest = 12_000 + 4*2_000
	for _, id := range succeeded {
		r, ok := rows[id]
		if !ok {
			t.Fatalf("request %s succeeded but has no usage row", id)
		}
		if mustNanos(t, r.Cost) != perRequest || r.Estimated {
			t.Fatalf("row %+v, want cost %d", r, perRequest)
		}
	}
	t.Logf("%d requests succeeded, %d refused at connect during %d reloads", len(succeeded), failed.Load(), reloads)
	after := getUser(t, u.ID)
	if moved := 10_000_000_000 - mustNanos(t, after.Balance); moved != sum || after.Held != "0.000000000" {
		t.Fatalf("balance moved %d (held %s), rows sum %d", moved, after.Held, sum)
	}
}
