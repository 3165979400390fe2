package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

// unavailableBound is how long a request may take to learn that Redis cannot
// be reached. The gateway's Redis client gives up after a 1s read timeout,
// retried once (or a 2s dial timeout): a bound on a timeout, not a
// correctness measure.
const unavailableBound = 5 * time.Second

// faultChat is a small JSON chat request; the mock answers it with 12 input
// and 5 output tokens: 12·1000 + 5·2000 nanos on test-model.
const (
	faultChat    = `{"model":"test-model","messages":[{"role":"user","content":"hi"}]}`
	faultChatFee = 12*testModelInputNanos + 5*testModelOutputNanos
)

// pauseRedis makes the shared Redis hold the commands of every client
// (mode "ALL") or every write ("WRITE", which includes every script, so
// every authorize and settle) for at most d. For WRITE, the returned
// function ends the pause early, and runs when the test ends; Redis holds
// even CLIENT UNPAUSE during an ALL pause, which lasts its whole d.
func pauseRedis(t *testing.T, mode string, d time.Duration) (unpause func()) {
	t.Helper()
	if _, err := testredis.Do(env.redis.Addr, "CLIENT", "PAUSE", strconv.FormatInt(d.Milliseconds(), 10), mode); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	if mode == "ALL" {
		return func() {}
	}
	var once sync.Once
	unpause = func() {
		once.Do(func() {
			if _, err := testredis.Do(env.redis.Addr, "CLIENT", "UNPAUSE"); err != nil {
				t.Errorf("CLIENT UNPAUSE: %v", err)
			}
		})
	}
	t.Cleanup(unpause)
	return unpause
}

// timedAnswer is one request's answer and how long it took.
type timedAnswer struct {
	status  int
	code    string // error.code of an error answer
	body    string
	reqID   string
	elapsed time.Duration
	err     error
}

// noKeepAlive gives every request its own connection, so a slow answer
// cannot hold up the next request on it.
var noKeepAlive = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// timedPost posts body to the gateway with key and measures the answer.
// It never fails the test itself (it runs on other goroutines).
func timedPost(path, key, body, tag string) timedAnswer {
	req, _ := http.NewRequest("POST", gatewayURL+path, bytes.NewBufferString(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	if tag != "" {
		req.Header.Set("X-Test-Tag", tag)
	}
	start := time.Now()
	resp, err := noKeepAlive.Do(req)
	if err != nil {
		return timedAnswer{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	out := timedAnswer{status: resp.StatusCode, body: string(b), reqID: resp.Header.Get("X-Request-Id"), elapsed: time.Since(start), err: err}
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil {
		out.code = e.Error.Code
	}
	return out
}

// runConcurrently runs the calls at once and returns their answers in order.
func runConcurrently(calls ...func() timedAnswer) []timedAnswer {
	out := make([]timedAnswer, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = c()
		}()
	}
	wg.Wait()
	return out
}

// wantAnswer fails the test unless a has the status and error code (code ""
// for a success) and came within unavailableBound.
func wantAnswer(t *testing.T, what string, a timedAnswer, status int, code string) {
	t.Helper()
	if a.err != nil {
		t.Fatalf("%s: %v after %s", what, a.err, a.elapsed)
	}
	if a.status != status || a.code != code {
		t.Fatalf("%s: %d %q after %s, want %d %q: %s", what, a.status, a.code, a.elapsed, status, code, a.body)
	}
	if a.elapsed >= unavailableBound {
		t.Fatalf("%s: answered after %s, bound %s", what, a.elapsed, unavailableBound)
	}
}

// pollFor polls cond until it holds or d passes; cond says what it saw.
func pollFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s; last saw %s", what, d, saw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reconcileReport is the admin reconcile answer, the parts tests read.
type reconcileReport struct {
	InSync   bool              `json:"in_sync"`
	Flushed  int               `json:"flushed"`
	Accounts []json.RawMessage `json:"accounts"`
	Keys     []json.RawMessage `json:"keys"`
}

// reconcileNow runs the admin reconcile (which first moves pending usage
// into the ledger), retrying while Redis is still coming back.
func reconcileNow(t *testing.T, apply bool) reconcileReport {
	t.Helper()
	var rep reconcileReport
	pollFor(t, 15*time.Second, "reconcile", func() (bool, string) {
		resp, err := http.Post(adminURL+"/aitoken/reconcile?apply="+strconv.FormatBool(apply), "application/json", nil)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		rep = reconcileReport{}
		return resp.StatusCode == http.StatusOK && json.Unmarshal(b, &rep) == nil, fmt.Sprintf("%d %s", resp.StatusCode, b)
	})
	return rep
}

// spooled reports whether the gateway's spool holds a settlement of the
// request id.
func spooled(t *testing.T, requestID string) bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(spoolDir(), "spool-*.jsonl"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(`"id":"`+requestID+`"`)) {
			return true
		}
	}
	return false
}

// waitRedisClient waits until the gateway's Redis client dials again after
// an outage. go-redis stops dialing once as many dials failed as its pool
// holds connections, answering with the last dial error, until a probe it
// makes every second gets through: for up to a second after Redis is back,
// any request needing a new connection fails. A burst of concurrent admin
// reads (each needs a connection) shows the client is past that.
func waitRedisClient(t *testing.T, user string) {
	t.Helper()
	burst := min(10*runtime.GOMAXPROCS(0), 100) // go-redis's pool size, capped
	pollFor(t, 15*time.Second, "the gateway's redis client", func() (bool, string) {
		errs := make(chan error, burst)
		var wg sync.WaitGroup
		for range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, err := accountNanos(user)
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return false, err.Error()
			}
		}
		return true, ""
	})
}

// waitSubscribed waits until the gateway listens for revocation notices
// (after Redis came back it subscribes again, and then empties its key
// cache, since notices may have been missed).
func waitSubscribed(t *testing.T) {
	t.Helper()
	pollFor(t, 10*time.Second, "the gateway subscribed to revocation notices", func() (bool, string) {
		v, err := testredis.Do(env.redis.Addr, "PUBSUB", "NUMSUB", billing.RevocationChannel)
		l, _ := v.([]any)
		if err != nil || len(l) != 2 {
			return false, fmt.Sprintf("%v %v", v, err)
		}
		n, _ := l[1].(int64)
		return n >= 1, fmt.Sprintf("%d subscribers", n)
	})
}

// waitRows waits (longer than waitUsage: a spooled settlement is replayed
// with a backoff of up to 30s) until user has n usage rows and no holds.
func waitRows(t *testing.T, user string, n int) []usageRecord {
	t.Helper()
	var recs []usageRecord
	pollFor(t, 45*time.Second, fmt.Sprintf("%d usage rows", n), func() (bool, string) {
		recs = usageOf(t, user)
		held := getUser(t, user).Held
		return len(recs) >= n && held == "0.000000000", fmt.Sprintf("%d rows, held %s", len(recs), held)
	})
	if len(recs) != n {
		t.Fatalf("want %d usage rows, got %d: %+v", n, len(recs), recs)
	}
	return recs
}

// TestRedisDownDenies: with on_redis_error deny (the default), a request
// that cannot reach Redis gets 503 service_unavailable within a bound,
// whether Redis stalls or is gone, and leaves nothing behind; and the
// gateway recovers when Redis does.
func TestRedisDownDenies(t *testing.T) {
	gateway(t)

	t.Run("stalled", func(t *testing.T) {
		u, k := newAccount(t, "1.00", "")
		// Every command waits: the client times out (1s, retried once).
		// The pause outlasts the requests by two seconds, so Redis sees
		// their connections close before it would run their scripts.
		pauseRedis(t, "ALL", 4*time.Second)
		const n = 8
		calls := make([]func() timedAnswer, n)
		for i := range calls {
			calls[i] = func() timedAnswer { return timedPost("/v1/chat/completions", k.Key, faultChat, "stalled") }
		}
		answers := runConcurrently(calls...)
		var slowest time.Duration
		for i, a := range answers {
			wantAnswer(t, fmt.Sprintf("request %d", i), a, http.StatusServiceUnavailable, "service_unavailable")
			slowest = max(slowest, a.elapsed)
		}
		t.Logf("%d requests to a stalled redis: 503 after %s at most", n, slowest)
		// Back: Redis answers again, and the stall left no hold.
		pollFor(t, 10*time.Second, "a request after the stall", func() (bool, string) {
			a := timedPost("/v1/chat/completions", k.Key, faultChat, "")
			return a.status == http.StatusOK, fmt.Sprintf("%d %s", a.status, a.body)
		})
		recs := waitUsage(t, u.ID, 1)
		if n := hits("stalled"); n != 0 {
			t.Fatalf("%d denied requests reached the upstream", n)
		}
		if got := getUser(t, u.ID); mustNanos(t, got.Balance) != 1_000_000_000-faultChatFee || got.Held != "0.000000000" {
			t.Fatalf("after the stall: %+v, rows %+v", got, recs)
		}
	})

	t.Run("stopped", func(t *testing.T) {
		u, k := newAccount(t, "1.00", "")
		if a := timedPost("/v1/chat/completions", k.Key, faultChat, ""); a.status != http.StatusOK {
			t.Fatalf("before the stop: %d %s", a.status, a.body)
		}
		waitUsage(t, u.ID, 1)
		want := getUser(t, u.ID)
		// Redis loses its data when it restarts: move every pending
		// usage record into the ledger first, which then rebuilds it.
		reconcileNow(t, false)

		env.redis.Stop()
		restarted := false
		t.Cleanup(func() {
			if !restarted {
				env.redis.Restart()
				waitRedisClient(t, u.ID)
				reconcileNow(t, true)
			}
		})
		const n = 8
		calls := make([]func() timedAnswer, n)
		for i := range calls {
			calls[i] = func() timedAnswer { return timedPost("/v1/chat/completions", k.Key, faultChat, "stopped") }
		}
		answers := runConcurrently(calls...)
		var slowest time.Duration
		for i, a := range answers {
			wantAnswer(t, fmt.Sprintf("request %d", i), a, http.StatusServiceUnavailable, "service_unavailable")
			slowest = max(slowest, a.elapsed)
		}
		t.Logf("%d requests with redis stopped: 503 after %s at most", n, slowest)
		if n := hits("stopped"); n != 0 {
			t.Fatalf("%d denied requests reached the upstream", n)
		}

		env.redis.Restart()
		restarted = true
		waitRedisClient(t, u.ID)
		// An empty Redis knows no key: the ledger rebuilds it. The node
		// drops its copy of the key once its notice subscription is back
		// (a restart breaks it); until then a request may still be
		// judged from that copy.
		deadline := time.Now().Add(5 * time.Second)
		for {
			a := timedPost("/v1/chat/completions", k.Key, faultChat, "")
			if a.status == http.StatusUnauthorized || time.Now().After(deadline) {
				wantAnswer(t, "a key in an empty redis", a, http.StatusUnauthorized, "invalid_api_key")
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		rep := reconcileNow(t, true)
		if rep.InSync || len(rep.Accounts) == 0 || len(rep.Keys) == 0 {
			t.Fatalf("reconcile found nothing to rebuild: %+v", rep)
		}
		if got := getUser(t, u.ID); got.Balance != want.Balance || got.Held != "0.000000000" {
			t.Fatalf("after rebuild: %+v, want balance %s", got, want.Balance)
		}
		if a := timedPost("/v1/chat/completions", k.Key, faultChat, ""); a.status != http.StatusOK {
			t.Fatalf("after rebuild: %d %s", a.status, a.body)
		}
		waitUsage(t, u.ID, 2)
		if got := getUser(t, u.ID); mustNanos(t, got.Balance) != 1_000_000_000-2*faultChatFee {
			t.Fatalf("after rebuild and a request: %+v", got)
		}
		if rep := reconcileNow(t, false); !rep.InSync {
			t.Fatalf("ledger and redis differ after the rebuild: %+v", rep)
		}
		waitSubscribed(t)
	})
}

// TestAllowModeSpoolsAndReplays: with on_redis_error allow, a key the node
// saw valid is served while Redis cannot be reached, without a hold; its
// settlement waits in the spool and is applied exactly once when Redis is
// back. Keys the node has not seen are not admitted, and a deny route
// still denies.
func TestAllowModeSpoolsAndReplays(t *testing.T) {
	gateway(t)
	waitSubscribed(t)
	u, k := newAccount(t, "1.00", "")
	_, unseen := newAccount(t, "1.00", "") // valid, never used on this node
	first := timedPost("/allow/v1/chat/completions", k.Key, faultChat, "")
	if first.status != http.StatusOK {
		t.Fatalf("first request: %d %s", first.status, first.body)
	}
	waitUsage(t, u.ID, 1)

	unpause := pauseRedis(t, "WRITE", 20*time.Second)
	answers := runConcurrently(
		func() timedAnswer { return timedPost("/allow/v1/chat/completions", k.Key, faultChat, "allow-cached") },
		func() timedAnswer { return timedPost("/v1/chat/completions", k.Key, faultChat, "allow-deny-route") },
		func() timedAnswer {
			return timedPost("/allow/v1/chat/completions", "sk-ait-unknown-key", faultChat, "allow-unknown")
		},
		func() timedAnswer {
			return timedPost("/allow/v1/chat/completions", unseen.Key, faultChat, "allow-unseen")
		},
	)
	admitted := answers[0]
	wantAnswer(t, "cached key, allow route", admitted, http.StatusOK, "")
	if !strings.Contains(admitted.body, `"content":"Hello from the mock upstream"`) {
		t.Fatalf("admitted request's answer: %s", admitted.body)
	}
	wantAnswer(t, "cached key, deny route", answers[1], http.StatusServiceUnavailable, "service_unavailable")
	// Writes are paused, reads are not: Redis can still tell a key it
	// does not have.
	wantAnswer(t, "unknown key, allow route", answers[2], http.StatusUnauthorized, "invalid_api_key")
	wantAnswer(t, "valid key never seen here, allow route", answers[3], http.StatusServiceUnavailable, "service_unavailable")
	for _, tag := range []string{"allow-deny-route", "allow-unknown", "allow-unseen"} {
		if n := hits(tag); n != 0 {
			t.Fatalf("%s: %d denied requests reached the upstream", tag, n)
		}
	}
	t.Logf("with redis paused: admitted from the cache after %s; denied after %s, %s, %s",
		admitted.elapsed, answers[1].elapsed, answers[2].elapsed, answers[3].elapsed)

	// Redis still holds every command: the settlement gives up and waits
	// in the spool.
	pollFor(t, 15*time.Second, "the admitted request's settlement in the spool", func() (bool, string) {
		return spooled(t, admitted.reqID), "not spooled"
	})
	unpause()

	recs := waitRows(t, u.ID, 2)
	var row *usageRecord
	for i, r := range recs {
		if r.RequestID == admitted.reqID {
			if row != nil {
				t.Fatalf("two rows for %s", r.RequestID)
			}
			row = &recs[i]
		}
	}
	if row == nil {
		t.Fatalf("no usage row for the admitted request %s: %+v", admitted.reqID, recs)
	}
	if mustNanos(t, row.Cost) != faultChatFee || row.Estimated || row.Status != 200 || row.OutputTokens != 5 {
		t.Fatalf("replayed row: %+v", *row)
	}
	if got := getUser(t, u.ID); mustNanos(t, got.Balance) != 1_000_000_000-2*faultChatFee || got.Held != "0.000000000" {
		t.Fatalf("after the replay: %+v, want balance moved by %d", got, 2*faultChatFee)
	}
	// Applied once: the spool is drained and nothing more arrives.
	pollFor(t, 10*time.Second, "spool drained", func() (bool, string) {
		return !spooled(t, admitted.reqID), "still spooled"
	})
	reconcileNow(t, false) // flushes the usage stream into the ledger
	if recs := usageOf(t, u.ID); len(recs) != 2 {
		t.Fatalf("%d usage rows after the replay, want 2", len(recs))
	}
	if got := getUser(t, u.ID); mustNanos(t, got.Balance) != 1_000_000_000-2*faultChatFee {
		t.Fatalf("balance changed again: %+v", got)
	}
}

// TestRevocationDropsCachedKey: a revoked key is dropped from every node's
// key cache by the revocation notice, so it is not served from the cache
// while Redis cannot be reached; a key not revoked still is.
func TestRevocationDropsCachedKey(t *testing.T) {
	gateway(t)
	waitSubscribed(t)
	u, revoked := newAccount(t, "1.00", "")
	var kept keyResp
	if st := admin(t, "POST", "/aitoken/keys", `{"user":"`+u.ID+`"}`, &kept); st != http.StatusCreated {
		t.Fatalf("second key: %d", st)
	}
	for _, k := range []keyResp{revoked, kept} {
		if a := timedPost("/allow/v1/chat/completions", k.Key, faultChat, ""); a.status != http.StatusOK {
			t.Fatalf("first request: %d %s", a.status, a.body)
		}
	}
	waitUsage(t, u.ID, 2)
	if st := admin(t, "DELETE", "/aitoken/keys/"+revoked.ID, "", nil); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}

	// At once, with Redis unreachable: only the cache decides.
	unpause := pauseRedis(t, "WRITE", 10*time.Second)
	answers := runConcurrently(
		func() timedAnswer {
			return timedPost("/allow/v1/chat/completions", revoked.Key, faultChat, "revoked-cached")
		},
		func() timedAnswer { return timedPost("/allow/v1/chat/completions", kept.Key, faultChat, "") },
	)
	unpause()
	if a := answers[0]; a.err != nil || a.status == http.StatusOK || (a.status != 503 && a.status != 401) {
		t.Fatalf("revoked key with redis paused: %d %v %s", a.status, a.err, a.body)
	}
	if n := hits("revoked-cached"); n != 0 {
		t.Fatal("the revoked key's request reached the upstream")
	}
	// The cache was live: the key not revoked was served from it.
	wantAnswer(t, "kept key with redis paused", answers[1], http.StatusOK, "")
	t.Logf("with redis paused: revoked key %d after %s; kept key %d after %s",
		answers[0].status, answers[0].elapsed, answers[1].status, answers[1].elapsed)

	a := timedPost("/allow/v1/chat/completions", revoked.Key, faultChat, "")
	wantAnswer(t, "revoked key, redis back", a, http.StatusUnauthorized, "invalid_api_key")
	waitRows(t, u.ID, 3)
	if got := getUser(t, u.ID); mustNanos(t, got.Balance) != 1_000_000_000-3*faultChatFee {
		t.Fatalf("balance %s, want moved by %d", got.Balance, 3*faultChatFee)
	}
}

// TestRedisDataLossDuringStreamStillBills: Redis loses its data (a restart
// without persistence, or a failover to a replica that had not yet
// received the hold) while a stream is open. The stream completes, so its
// usage must be recorded and billed once the ledger has rebuilt Redis.
// The first settlement attempt debits even without its hold.
func TestRedisDataLossDuringStreamStillBills(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	done := make(chan timedAnswer, 1)
	go func() {
		req, _ := http.NewRequest("POST", gatewayURL+"/v1/chat/completions",
			strings.NewReader(`{"model":"test-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+k.Key)
		req.Header.Set("X-Mock-Hold", "1")
		resp, err := noKeepAlive.Do(req)
		if err != nil {
			done <- timedAnswer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- timedAnswer{status: resp.StatusCode, body: string(b), reqID: resp.Header.Get("X-Request-Id"), err: err}
	}()
	pollFor(t, 10*time.Second, "the stream's hold", func() (bool, string) {
		held := getUser(t, u.ID).Held
		return held != "0.000000000", held
	})
	reconcileNow(t, false) // every pending usage record into the ledger
	env.redis.Restart()
	waitRedisClient(t, u.ID)
	reconcileNow(t, true)
	waitSubscribed(t)

	var a timedAnswer
	pollFor(t, 10*time.Second, "the stream to end", func() (bool, string) {
		env.mock.Release()
		select {
		case a = <-done:
			return true, ""
		default:
			return false, "still open"
		}
	})
	if a.err != nil || a.status != http.StatusOK || !strings.Contains(a.body, "data: [DONE]") {
		t.Fatalf("stream: %d %v %s", a.status, a.err, a.body)
	}
	recs := waitRows(t, u.ID, 1)
	if recs[0].RequestID != a.reqID || mustNanos(t, recs[0].Cost) != faultChatFee {
		t.Fatalf("row %+v, want request %s costing %d", recs[0], a.reqID, faultChatFee)
	}
	if got := getUser(t, u.ID); mustNanos(t, got.Balance) != 1_000_000_000-faultChatFee {
		t.Fatalf("balance %s, want moved by %d", got.Balance, faultChatFee)
	}
}
