package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	_ "github.com/cnaitoken/caddy-aitoken/caddymodule"
	"github.com/cnaitoken/caddy-aitoken/internal/freeport"
	"github.com/cnaitoken/caddy-aitoken/internal/mockupstream"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

// The one Caddy of this test binary (caddytest shares it) listens here.
const (
	adminURL   = "http://localhost:2999"
	gatewayURL = "http://localhost:9080"
)

// env is what TestMain starts: a real redis-server, the mock provider and a
// ledger file. Every test makes its own users and keys.
var env struct {
	redis    *testredis.Server
	mock     *mockupstream.Server
	upstream *httptest.Server
	dir      string
	// closedAddr is a loopback address nothing listens on: an upstream
	// that cannot be reached.
	closedAddr string
	// closedAddr2 is another, for the failover route alone (Caddy shares
	// an address's failure count between routes).
	closedAddr2 string
	// mock2 behind upstream2 is a second provider (routing tests);
	// failing answers 500 to everything, health checks included.
	mock2     *mockupstream.Server
	upstream2 *httptest.Server
	failing   *httptest.Server
	// silent accepts connections and reads them, but never answers: an
	// upstream that times out (the /slow route waits 200ms for headers).
	silent net.Listener
	// silentConns counts the connections silent accepted.
	silentConns atomic.Int64
}

func TestMain(m *testing.M) {
	if args := os.Getenv(cliEnv); args != "" { // runCaddy's child: be `caddy`
		var a []string
		if err := json.Unmarshal([]byte(args), &a); err != nil {
			os.Exit(3)
		}
		os.Args = append([]string{"caddy"}, a...)
		caddycmd.Main()
		os.Exit(0)
	}
	srv, stop := testredis.StartMain()
	env.redis = srv
	env.mock = mockupstream.New()
	env.upstream = httptest.NewServer(countHits(env.mock))
	env.mock2 = mockupstream.New()
	env.upstream2 = httptest.NewServer(env.mock2)
	env.failing = httptest.NewServer(failingUpstream())
	if port, err := freeport.Port(); err == nil {
		env.closedAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	if port, err := freeport.Port(); err == nil {
		env.closedAddr2 = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		env.silent = ln
		go silentUpstream(ln)
	}
	env.dir, _ = os.MkdirTemp("", "aitoken-test-")
	stopStripe := startStripeEnv()
	code := m.Run()
	stopStripe()
	if env.silent != nil {
		env.silent.Close()
	}
	env.upstream.Close()
	env.upstream2.Close()
	env.failing.Close()
	stop()
	os.RemoveAll(env.dir)
	os.Exit(code)
}

// silentUpstream accepts connections on ln and reads what comes, never
// answering, until the peer closes the connection.
func silentUpstream(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		env.silentConns.Add(1)
		go func() {
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}()
	}
}

// silentAddr is the address of env.silent.
func silentAddr() string {
	if env.silent == nil {
		return "127.0.0.1:1"
	}
	return env.silent.Addr().String()
}

// config is the gateway's Caddyfile; flush varies it for reload tests.
func config(flush string) string {
	return withStripe(fmt.Sprintf(`{
	skip_install_trust
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 10s
	aitoken {
		redis %s
		database %s
		currency USD
		price test-model  input 1.00 cached_input 0.10 output 2.00
		price other-model input 1.00 output 1.00
		price pre-*       input 3.00 output 3.00
		price claude-test input 3.00 cached_input 0.30 cache_write 3.75 output 15.00
		flush_interval %s
		spool_dir %s
	}
}
http://localhost:9080 {
	route /v1/* {
		aitoken {
			max_request_body 64KiB
			reserve_output_tokens 100
		}
		reverse_proxy %s {
			header_up Authorization "Bearer upstream-secret"
		}
	}
	# BenchmarkGatewayRequest: the same proxy with and without aitoken.
	route /bench/bare/v1/* {
		uri strip_prefix /bench/bare
		reverse_proxy %[5]s
	}
	route /bench/metered/v1/* {
		uri strip_prefix /bench/metered
		aitoken
		reverse_proxy %[5]s
	}
	route /limited/v1/* {
		uri strip_prefix /limited
		aitoken {
			models test-model
		}
		reverse_proxy %s
	}
	route /noinject/v1/* {
		uri strip_prefix /noinject
		aitoken {
			inject_stream_usage off
		}
		reverse_proxy %s
	}
	route /allow/v1/* {
		uri strip_prefix /allow
		aitoken {
			reserve_output_tokens 100
			on_redis_error allow
		}
		reverse_proxy %s
	}
	route /pass/v1/* {
		uri strip_prefix /pass
		aitoken {
			passthrough /v1/files /v1/files/*
		}
		reverse_proxy %s
	}
	route /cancel/v1/* {
		uri strip_prefix /cancel
		aitoken {
			on_client_gone cancel
		}
		reverse_proxy %s
	}
	route /shortfinish/v1/* {
		uri strip_prefix /shortfinish
		aitoken {
			on_client_gone finish 300ms
		}
		reverse_proxy %s
	}
	route /routed/v1/* {
		uri strip_prefix /routed
		aitoken {
			alias cheap-model other-model
			alias pre-alias test-model
		}
		@second vars {http.vars.aitoken.model} other-model
		reverse_proxy @second %[13]s
		reverse_proxy %[5]s
	}
	route /lb/v1/* {
		uri strip_prefix /lb
		aitoken
		reverse_proxy %[15]s %[13]s {
			lb_policy first
			lb_try_duration 3s
			lb_try_interval 20ms
			fail_duration 100ms
		}
	}
	route /hc/v1/* {
		uri strip_prefix /hc
		aitoken
		reverse_proxy %[14]s %[13]s {
			lb_policy first
			health_uri /v1/models
			health_interval 50ms
		}
	}
	route /down/v1/* {
		uri strip_prefix /down
		aitoken
		reverse_proxy %[12]s {
			fail_duration 1m
			max_fails 1
		}
	}
	route /slow/v1/* {
		uri strip_prefix /slow
		aitoken
		reverse_proxy %[16]s {
			transport http {
				response_header_timeout 200ms
			}
		}
	}
}
`, env.redis.URL(), filepath.Join(env.dir, "ledger.db"), flush, spoolDir(),
		env.upstream.URL, env.upstream.URL, env.upstream.URL, env.upstream.URL,
		env.upstream.URL, env.upstream.URL, env.upstream.URL, env.closedAddr,
		env.upstream2.URL, env.failing.URL, env.closedAddr2, silentAddr())) + httpsSite()
}

// spoolDir is where the gateway spools settlements Redis could not take
// (inside the test's directory, not the user's Caddy data directory).
func spoolDir() string { return filepath.Join(env.dir, "spool") }

// upstreamHits counts the requests that reached the mock upstream, by their
// X-Test-Tag header (the mock itself remembers only the last 64).
var upstreamHits struct {
	sync.Mutex
	n map[string]int
}

// countHits counts the requests to h by tag (upstreamHits). It also
// matches paths without regard to letter case, as many
// self-hosted providers do, so a request the gateway forwards in another
// spelling is served (and must be metered).
func countHits(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = strings.ToLower(r.URL.Path)
		if tag := r.Header.Get("X-Test-Tag"); tag != "" {
			upstreamHits.Lock()
			if upstreamHits.n == nil {
				upstreamHits.n = map[string]int{}
			}
			upstreamHits.n[tag]++
			upstreamHits.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

// hits is how many requests tagged X-Test-Tag: tag reached the upstream.
func hits(tag string) int {
	upstreamHits.Lock()
	defer upstreamHits.Unlock()
	return upstreamHits.n[tag]
}

var startOnce sync.Mutex

// gateway makes sure the shared Caddy runs the test config.
func gateway(t *testing.T) *caddytest.Tester {
	t.Helper()
	startOnce.Lock()
	defer startOnce.Unlock()
	tc := caddytest.NewTester(t)
	load(tc, config("50ms"))
	return tc
}

// load runs cfg on the shared Caddy. The tests' clients share
// http.DefaultTransport; a connection it keeps from the config before may
// be closed by that server's shutdown just as a POST goes out on it, which
// Go does not retry, so the idle ones are dropped after a change.
func load(tc *caddytest.Tester, cfg string) {
	tc.InitServer(cfg, "caddyfile")
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// admin calls the admin API and decodes the JSON answer into out.
func admin(t testing.TB, method, path, body string, out any) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, adminURL+path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

type userResp struct {
	ID      string `json:"id"`
	Email   string `json:"email"`
	Balance string `json:"balance"`
	Held    string `json:"held"`
}

type keyResp struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

type usageRecord struct {
	RequestID         string `json:"request_id"`
	KeyID             string `json:"key_id"`
	Model             string `json:"model"`
	Endpoint          string `json:"endpoint"`
	Stream            bool   `json:"stream"`
	Status            int    `json:"status"`
	Outcome           string `json:"outcome"`
	InputTokens       int64  `json:"input_tokens"`
	CachedInputTokens int64  `json:"cached_input_tokens"`
	OutputTokens      int64  `json:"output_tokens"`
	ReasoningTokens   int64  `json:"reasoning_tokens"`
	Cost              string `json:"cost"`
	Estimated         bool   `json:"estimated"`
	Clamped           bool   `json:"usage_clamped"`
}

// newAccount creates a user with the given credit and a key for it.
func newAccount(t testing.TB, credit string, keyBody string) (userResp, keyResp) {
	t.Helper()
	var u userResp
	if st := admin(t, "POST", "/aitoken/users", `{"email":"t@example.com"}`, &u); st != http.StatusCreated {
		t.Fatalf("create user: %d", st)
	}
	if credit != "" {
		if st := admin(t, "POST", "/aitoken/users/"+u.ID+"/credits", `{"amount":"`+credit+`","reason":"test"}`, &u); st != http.StatusOK {
			t.Fatalf("credit: %d", st)
		}
	}
	if keyBody == "" {
		keyBody = `{"user":"` + u.ID + `"}`
	}
	var k keyResp
	if st := admin(t, "POST", "/aitoken/keys", strings.ReplaceAll(keyBody, "$USER", u.ID), &k); st != http.StatusCreated {
		t.Fatalf("create key: %d", st)
	}
	return u, k
}

func getUser(t *testing.T, id string) userResp {
	t.Helper()
	var u userResp
	if st := admin(t, "GET", "/aitoken/users/"+id, "", &u); st != http.StatusOK {
		t.Fatalf("get user: %d", st)
	}
	return u
}

func usageOf(t *testing.T, user string) []usageRecord {
	t.Helper()
	var out struct {
		Records []usageRecord `json:"records"`
	}
	if st := admin(t, "GET", "/aitoken/usage?limit=1000&user="+user, "", &out); st != http.StatusOK {
		t.Fatalf("usage: %d", st)
	}
	return out.Records
}

// waitUsage waits until the ledger holds n usage rows for user (the
// flusher runs every 50ms) and the account holds nothing, and returns them.
func waitUsage(t *testing.T, user string, n int) []usageRecord {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		recs := usageOf(t, user)
		if len(recs) >= n && getUser(t, user).Held == "0.000000000" {
			if len(recs) > n {
				t.Fatalf("want %d usage rows, got %d", n, len(recs))
			}
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %d usage rows, got %d after 15s", n, len(recs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// post sends a raw request to the gateway.
func post(t *testing.T, path, key, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", gatewayURL+path, bytes.NewBufferString(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// mustNanos reads a decimal amount ("-1.500000000") as nanos.
func mustNanos(t *testing.T, s string) int64 {
	t.Helper()
	n, err := money.ParseNanos(s)
	if err != nil {
		t.Fatalf("amount %q: %v", s, err)
	}
	return int64(n)
}
