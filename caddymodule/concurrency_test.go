package caddymodule_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// Prices of test-model in the test config, in nanos per token.
const (
	testModelInputNanos  = 1_000 // 1.00 per 1M
	testModelOutputNanos = 2_000 // 2.00 per 1M
)

// errCaptured stops a request in captureBody before it leaves the client.
var errCaptured = errors.New("captured")

// captureBody returns the body the SDK would send for a streamed chat with p.
func captureBody(t *testing.T, p openai.ChatCompletionNewParams) []byte {
	t.Helper()
	var body []byte
	c := client("sk-unused", option.WithMiddleware(func(r *http.Request, _ option.MiddlewareNext) (*http.Response, error) {
		body, _ = io.ReadAll(r.Body)
		return nil, errCaptured
	}))
	s := c.Chat.Completions.NewStreaming(context.Background(), p)
	if s.Next() || !errors.Is(s.Err(), errCaptured) || len(body) == 0 {
		t.Fatalf("capturing the request body: %v", s.Err())
	}
	return body
}

// formatNanos writes n nanos as the admin API's decimal amount.
func formatNanos(n int64) string { return fmt.Sprintf("%d.%09d", n/1e9, n%1e9) }

// accountNanos reads a user's balance and held amount without failing the test
// (for goroutines other than the test's).
func accountNanos(user string) (balance, held int64, err error) {
	resp, err := http.Get(adminURL + "/aitoken/users/" + user)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	var u userResp
	if err := json.NewDecoder(resp.Body).Decode(&u); err != nil || resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("get user: %d %v", resp.StatusCode, err)
	}
	b, err := money.ParseNanos(u.Balance)
	if err != nil {
		return 0, 0, fmt.Errorf("balance %q: %w", u.Balance, err)
	}
	h, err := money.ParseNanos(u.Held)
	if err != nil {
		return 0, 0, fmt.Errorf("held %q: %w", u.Held, err)
	}
	return int64(b), int64(h), nil
}

// streamOutcome is what one client of the swarm saw.
type streamOutcome struct {
	requestID string // of a stream that completed
	refused   bool   // 402 insufficient_quota
	other     string // anything else: fails the test
}

// runStream streams one chat and classifies the result. admitted, if not
// nil, is called once the first chunk arrived (the request passed the
// gateway's hold).
func runStream(ctx context.Context, c openai.Client, p openai.ChatCompletionNewParams, deltas int,
	admitted func(), opts ...option.RequestOption) streamOutcome {
	var raw *http.Response
	s := c.Chat.Completions.NewStreaming(ctx, p, append(opts, option.WithResponseInto(&raw))...)
	defer s.Close()
	content, chunks := "", 0
	for s.Next() {
		if chunks == 0 && admitted != nil {
			admitted()
		}
		chunks++
		ch := s.Current()
		if len(ch.Choices) == 0 {
			return streamOutcome{other: "client got the injected usage chunk"}
		}
		content += ch.Choices[0].Delta.Content
	}
	err := s.Err()
	var apiErr *openai.Error
	switch {
	case err == nil && chunks > 0:
		if want := deltas + 2; chunks != want { // role chunk, deltas, finish chunk
			return streamOutcome{other: fmt.Sprintf("stream of %d chunks, want %d (content %q)", chunks, want, content)}
		}
		return streamOutcome{requestID: raw.Header.Get("X-Request-Id")}
	case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusPaymentRequired && apiErr.Code == "insufficient_quota" && chunks == 0:
		return streamOutcome{refused: true}
	case errors.As(err, &apiErr):
		return streamOutcome{other: fmt.Sprintf("status %d code %q after %d chunks: %s", apiErr.StatusCode, apiErr.Code, chunks, apiErr.Message)}
	case err != nil:
		return streamOutcome{other: fmt.Sprintf("after %d chunks: %v", chunks, err)}
	default:
		return streamOutcome{other: "empty stream"}
	}
}

// TestConcurrentStreamsNeverOverdraw sends 200 concurrent streams on an
// account whose balance covers the holds of 40: holds are reserved
// atomically, so no more than 40 can run at once, the balance never goes
// below zero, refused requests never reach the upstream, and every
// admitted one pays exactly its price.
func TestConcurrentStreamsNeverOverdraw(t *testing.T) {
	gateway(t)
	const (
		clients  = 200
		fit      = 40
		deltas   = 3
		maxOut   = 1000
		perCost  = 12*testModelInputNanos + deltas*testModelOutputNanos // what the mock reports
		deadline = 60 * time.Second
	)
	p := chatParams("test-model")
	p.MaxTokens = openai.Int(maxOut)
	body := captureBody(t, p)
	// A request holds what it can cost at most (its input bound, one
	// token per body byte plus 4096, and max_tokens), as far as the
	// balance allows, and at least its estimate (half a token per byte):
	// the credit covers 40 whole holds and less than one least hold.
	least := (int64(len(body))+1)/2*testModelInputNanos + maxOut*testModelOutputNanos
	// (The bound counts the body the upstream gets, which asks for usage.)
	upstreamBody := int64(len(body) + len(`"stream_options":{"include_usage":true},`))
	hold := (upstreamBody+4096)*testModelInputNanos + maxOut*testModelOutputNanos
	credit := fit*hold + least/2
	if perCost >= least {
		t.Fatalf("cost %d not under hold %d", perCost, least)
	}
	t.Logf("request body %d bytes: hold %d nanos (at least %d), credit %d nanos (%d holds and a bit)", len(body), hold, least, credit, fit)

	// swarm runs the clients at once on u's key k and checks the money
	// afterwards. It returns the request ids of the streams that completed.
	swarm := func(t *testing.T, u userResp, k keyResp, tag string, admitted func(), opts ...option.RequestOption) (ok []string, refused int) {
		c := client(k.Key)
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		outcomes := make([]streamOutcome, clients)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				outcomes[i] = runStream(ctx, c, p, deltas, admitted, append(opts,
					option.WithHeader("X-Mock-Deltas", fmt.Sprint(deltas)), option.WithHeader("X-Test-Tag", tag))...)
			}()
		}
		close(start)
		wg.Wait()
		for i, o := range outcomes {
			switch {
			case o.requestID != "":
				ok = append(ok, o.requestID)
			case o.refused:
				refused++
			default:
				t.Errorf("client %d: %s", i, o.other)
			}
		}
		if len(ok)+refused != clients {
			t.Fatalf("%d succeeded + %d refused (402) of %d", len(ok), refused, clients)
		}
		if len(ok) < 1 {
			t.Fatal("no request succeeded")
		}
		if n := hits(tag); n != len(ok) {
			t.Fatalf("upstream saw %d requests, %d succeeded: refused requests reached it", n, len(ok))
		}

		// The money: one row per success, each its exact price.
		recs := waitUsage(t, u.ID, len(ok))
		rows := map[string]usageRecord{}
		var sum int64
		for _, r := range recs {
			if _, dup := rows[r.RequestID]; dup {
				t.Fatalf("two usage rows for %s", r.RequestID)
			}
			rows[r.RequestID] = r
			cost := mustNanos(t, r.Cost)
			sum += cost
			if cost != perCost || r.Estimated || r.Outcome != "completed" || r.OutputTokens != deltas || r.InputTokens != 12 {
				t.Errorf("row %+v, want cost %d", r, perCost)
			}
		}
		for _, id := range ok {
			if _, found := rows[id]; !found {
				t.Errorf("request %s succeeded but has no usage row", id)
			}
		}
		after := getUser(t, u.ID)
		bal := mustNanos(t, after.Balance)
		if moved := credit - bal; moved != sum || sum != int64(len(ok))*perCost {
			t.Fatalf("balance moved %d, rows sum %d, %d successes × %d = %d", moved, sum, len(ok), perCost, int64(len(ok))*perCost)
		}
		if bal < 0 || after.Held != "0.000000000" {
			t.Fatalf("after the swarm: balance %s held %s", after.Balance, after.Held)
		}
		return ok, refused
	}

	// Every admitted stream stays open (X-Mock-Hold) until all 200 have
	// been answered: exactly 40 holds fit, the other 160 get 402.
	t.Run("held open", func(t *testing.T) {
		u, k := newAccount(t, formatNanos(credit), "")
		var decided, admittedN atomic.Int64
		// Admitted clients count themselves on their first chunk, refused
		// ones on their answer.
		admitted := func() { admittedN.Add(1); decided.Add(1) }
		countRefusal := option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			resp, err := next(r)
			if err != nil || resp.StatusCode != http.StatusOK {
				decided.Add(1)
			}
			return resp, err
		})
		done := make(chan struct{})
		var rwg sync.WaitGroup
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			end := time.Now().Add(deadline)
			for decided.Load() < clients && time.Now().Before(end) {
				select {
				case <-done:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
			// Nothing has been given back yet: the account holds exactly
			// the admitted streams' holds, and no more fit.
			bal, held, err := accountNanos(u.ID)
			if n := admittedN.Load(); err != nil || held != n*hold || bal != credit || held > bal || bal-held >= least {
				t.Errorf("with %d streams open: balance %d held %d (%v), want held %d", n, bal, held, err, n*hold)
			}
			// A stream reaching its hold point just after a Release waits
			// for the next one: release until the swarm is over.
			for {
				env.mock.Release()
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		ok, refused := func() ([]string, int) {
			defer func() { close(done); rwg.Wait() }()
			return swarm(t, u, k, "held-open", admitted, option.WithHeader("X-Mock-Hold", "1"), countRefusal)
		}()
		t.Logf("%d streams admitted, %d refused with 402", len(ok), refused)
		if len(ok) != fit {
			t.Fatalf("%d streams admitted at once, want exactly %d", len(ok), fit)
		}
	})

	// Free running: streams end and give back their holds while others
	// arrive. The account's holds never exceed what its balance covers.
	t.Run("free running", func(t *testing.T) {
		u, k := newAccount(t, formatNanos(credit), "")
		done := make(chan struct{})
		var samples, maxHeld atomic.Int64
		var swg sync.WaitGroup
		swg.Add(1)
		go func() {
			defer swg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				bal, held, err := accountNanos(u.ID)
				if err != nil {
					t.Errorf("sampling the account: %v", err)
					return
				}
				samples.Add(1)
				if held > maxHeld.Load() {
					maxHeld.Store(held)
				}
				if held > bal || held > fit*hold || bal < 0 {
					t.Errorf("overdrawn: balance %d held %d (at most %d holds of %d fit)", bal, held, fit, hold)
				}
			}
		}()
		ok, refused := func() ([]string, int) {
			defer func() { close(done); swg.Wait() }()
			return swarm(t, u, k, "free-running", nil, option.WithHeader("X-Mock-Delay", "2ms"))
		}()
		t.Logf("%d streams succeeded, %d refused with 402; %d account samples, at most %d holds at once",
			len(ok), refused, samples.Load(), maxHeld.Load()/hold)
		// The first 40 to arrive always fit: each success gives back more
		// than it pays.
		if len(ok) < fit {
			t.Fatalf("only %d streams succeeded, at least %d fit", len(ok), fit)
		}
	})
}
