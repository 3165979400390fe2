package dashboard_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	_ "github.com/cnaitoken/caddy-aitoken/caddymodule"
	"github.com/cnaitoken/caddy-aitoken/internal/freeport"
	"github.com/cnaitoken/caddy-aitoken/internal/mockupstream"
	"github.com/cnaitoken/caddy-aitoken/internal/stripemock"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// The tests run one real Caddy (caddytest shares it per binary) with the
// dashboard at /dashboard and the metered API at /v1 in front of the mock
// provider, a real redis-server and a ledger file, on free ports of their
// own (other packages' tests may run a Caddy meanwhile).
var base string

var env struct {
	redis                      *testredis.Server
	upstream                   *httptest.Server
	dir                        string
	adminPort, http, httpsPort int
	stripeHTTP                 int
	stripe                     *stripemock.Mock
	stripeErr                  error // why stripe-mock is not running
}

func TestMain(m *testing.M) {
	for _, p := range []*int{&env.adminPort, &env.http, &env.httpsPort, &env.stripeHTTP} {
		port, err := freeport.Port()
		if err != nil {
			fmt.Fprintln(os.Stderr, "no free port:", err)
			os.Exit(1)
		}
		*p = port
	}
	caddytest.Default.AdminPort = env.adminPort
	base = fmt.Sprintf("http://localhost:%d/dashboard", env.http)
	os.Setenv("AITOKEN_TEST_STRIPE_KEY", testStripeKey)
	os.Setenv("AITOKEN_TEST_WEBHOOK_SECRET", testWebhookSecret)
	env.stripe, env.stripeErr = stripemock.Start(env.stripeHTTP, freeport.Must())
	srv, stop := testredis.StartMain()
	env.redis = srv
	env.upstream = httptest.NewServer(mockupstream.New())
	env.dir, _ = os.MkdirTemp("", "aitoken-dash-")
	code := m.Run()
	env.upstream.Close()
	stop()
	if env.stripe != nil {
		env.stripe.Stop()
	}
	os.RemoveAll(env.dir)
	os.Exit(code)
}

func ledgerPath() string { return filepath.Join(env.dir, "ledger.db") }

// setup is what a test's Caddy runs with beyond the common config.
type setup struct {
	noStripe bool   // leave out the stripe block
	smtp     string // the dashboard's smtp block, if any
	signup   string // the dashboard's signup mode, if not the default
}

// caddyfile is the test Caddy's configuration.
func caddyfile(o setup) string {
	policy := filepath.Join(env.dir, "privacy.html")
	_ = os.WriteFile(policy, []byte("<p>Our policy: test.</p>"), 0o600)
	stripe, webhook := "", ""
	if !o.noStripe {
		webhook = "handle /stripe/webhook {\n\t\taitoken_stripe\n\t}"
		stripe = fmt.Sprintf(`stripe {
			secret_key     {env.AITOKEN_TEST_STRIPE_KEY}
			webhook_secret {env.AITOKEN_TEST_WEBHOOK_SECRET}
			success_url    http://localhost:%d/dashboard/billing
			min_topup      5.00
			max_topup      500.00
			topup_rate     3 1h
			api_base       http://127.0.0.1:%d
		}`, env.http, env.stripeHTTP)
	}
	extra := o.smtp
	if o.signup != "" {
		extra += "\n\t\t\tsignup " + o.signup
	}
	return fmt.Sprintf(`{
	skip_install_trust
	admin localhost:%d
	http_port %d
	https_port %d
	aitoken {
		redis %s
		database %s
		spool_dir %s
		flush_interval 50ms
		price test-model input 1.00 output 2.00
		%s
	}
}
http://localhost:%d {
	%s
	handle /dashboard/* {
		aitoken_dashboard {
			privacy_policy_file %s
			%s
		}
	}
	route /v1/* {
		aitoken
		reverse_proxy %s
	}
}
`, env.adminPort, env.http, env.httpsPort, env.redis.URL(), ledgerPath(), filepath.Join(env.dir, "spool"),
		stripe, env.http, webhook, policy, extra, env.upstream.URL)
}

func startCaddy(t *testing.T) { startCaddyWith(t, setup{}) }

func startCaddyWith(t *testing.T, o setup) {
	t.Helper()
	caddytest.NewTester(t).InitServer(caddyfile(o), "caddyfile")
	// The clients share http.DefaultTransport. A connection it keeps from
	// the Caddy before may be closed by that server's shutdown just as a
	// POST goes out on it, which Go does not retry: start fresh.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

var seq atomic.Int64

// client is a browser: a cookie jar, no redirects followed.
type client struct {
	tb  testing.TB
	hc  *http.Client
	jar *cookiejar.Jar
}

func newClient(tb testing.TB) *client {
	jar, _ := cookiejar.New(nil)
	return &client{tb: tb, jar: jar, hc: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *client) do(method, path string, form url.Values, hdr ...string) (*http.Response, string) {
	c.tb.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (c *client) session() string {
	u, _ := url.Parse(base)
	for _, ck := range c.jar.Cookies(u) {
		if ck.Name == "aitoken_session" {
			return ck.Value
		}
	}
	return ""
}

// signUp makes a new account and returns its email and a signed-in client.
func signUp(t *testing.T) (string, *client) {
	t.Helper()
	startCaddy(t)
	email := fmt.Sprintf("user%d-%d@example.com", time.Now().UnixNano(), seq.Add(1))
	c := newClient(t)
	resp, body := c.do("POST", "/signup", url.Values{"email": {email}, "password": {"correct horse battery"},
		"name": {"Test"}, "adult": {"on"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-up: %d %s", resp.StatusCode, body)
	}
	if n := len(resp.Header.Values("Set-Cookie")); n != 1 {
		t.Fatalf("sign-up set %d cookies, want 1", n)
	}
	return email, c
}

func TestSignUpSignInSignOut(t *testing.T) {
	email, c := signUp(t)
	resp, body := c.do("GET", "/", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "Balance") || !strings.Contains(body, "<svg") {
		t.Fatalf("overview: %d %s", resp.StatusCode, body)
	}
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "Referrer-Policy", "X-Content-Type-Options"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
	ck := resp.Header.Values("Set-Cookie")
	if len(ck) != 0 {
		t.Errorf("a page view set cookies: %v", ck)
	}
	stolen := c.session()

	// Sign out, then the stolen cookie is worthless.
	if resp, _ := c.do("POST", "/logout", url.Values{}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	thief := newClient(t)
	u, _ := url.Parse(base)
	thief.jar.SetCookies(u, []*http.Cookie{{Name: "aitoken_session", Value: stolen, Path: "/"}})
	if resp, _ := thief.do("GET", "/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a signed-out cookie still works: %d", resp.StatusCode)
	}

	// Sign in again: a new token, and the one the browser held before is ended.
	c2 := newClient(t)
	resp, _ = c2.do("POST", "/login", url.Values{"email": {strings.ToUpper(email)}, "password": {"correct horse battery"}})
	if resp.StatusCode != http.StatusSeeOther || len(resp.Header.Values("Set-Cookie")) != 1 {
		t.Fatalf("sign-in: %d %v", resp.StatusCode, resp.Header.Values("Set-Cookie"))
	}
	first := c2.session()
	c2.do("POST", "/login", url.Values{"email": {email}, "password": {"correct horse battery"}})
	if second := c2.session(); second == first || second == "" {
		t.Fatal("sign-in kept the session token (fixation)")
	}
	thief.jar.SetCookies(u, []*http.Cookie{{Name: "aitoken_session", Value: first, Path: "/"}})
	if resp, _ := thief.do("GET", "/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatal("the token held before sign-in still works")
	}
	if resp, body := c2.do("GET", "/privacy", nil); !strings.Contains(body, "Our policy: test.") {
		t.Fatalf("privacy: %d %s", resp.StatusCode, body)
	}
}

func TestWrongPasswordAndUnknownEmailAnswerAlike(t *testing.T) {
	email, _ := signUp(t)
	c := newClient(t)
	r1, b1 := c.do("POST", "/login", url.Values{"email": {email}, "password": {"wrong password!"}})
	r2, b2 := c.do("POST", "/login", url.Values{"email": {"nobody-" + email}, "password": {"wrong password!"}})
	b2 = strings.ReplaceAll(b2, "nobody-", "")
	if r1.StatusCode != http.StatusUnauthorized || r1.StatusCode != r2.StatusCode || b1 != b2 {
		t.Fatalf("known %d / unknown %d answer differently", r1.StatusCode, r2.StatusCode)
	}
	if !strings.Contains(b1, "Wrong email or password.") || len(r1.Header.Values("Set-Cookie")) != 0 {
		t.Fatal("not the generic error, or a cookie was set")
	}
}

func TestSignInRateLimitedPerAccount(t *testing.T) {
	email, _ := signUp(t)
	c := newClient(t)
	for range 10 {
		c.do("POST", "/login", url.Values{"email": {email}, "password": {"wrong password!"}})
	}
	resp, body := c.do("POST", "/login", url.Values{"email": {email}, "password": {"correct horse battery"}})
	if resp.StatusCode != http.StatusTooManyRequests || c.session() != "" {
		t.Fatalf("11th attempt: %d %s", resp.StatusCode, body)
	}
}

func TestCrossSitePostRefused(t *testing.T) {
	_, c := signUp(t)
	resp, _ := c.do("POST", "/keys", url.Values{"name": {"x"}}, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site post: %d, want 403", resp.StatusCode)
	}
	if resp, _ := c.do("POST", "/keys", url.Values{"name": {"x"}}, "Sec-Fetch-Site", "same-origin"); resp.StatusCode != http.StatusCreated {
		t.Fatalf("same-origin post: %d", resp.StatusCode)
	}
}

func TestKeysAndOtherCustomersIDsRefused(t *testing.T) {
	_, alice := signUp(t)
	_, bob := signUp(t)
	resp, body := alice.do("POST", "/keys", url.Values{"name": {"ci"}, "models": {"test-model"}, "rpm": {"60"}})
	if resp.StatusCode != http.StatusCreated || !strings.Contains(body, "sk-") {
		t.Fatalf("create key: %d %s", resp.StatusCode, body)
	}
	_, list := alice.do("GET", "/keys", nil)
	i := strings.Index(list, "/keys/key_")
	if i < 0 {
		t.Fatalf("no key listed: %s", list)
	}
	keyID := list[i+len("/keys/") : i+len("/keys/")+strings.Index(list[i+len("/keys/"):], "/")]
	if strings.Count(list, "sk-") > 1 && strings.Contains(list, body[strings.Index(body, "sk-"):strings.Index(body, "sk-")+30]) {
		t.Fatal("the key's secret is shown again")
	}
	if resp, _ := bob.do("POST", "/keys/"+keyID+"/revoke", url.Values{}); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("bob revoking alice's key: %d", resp.StatusCode)
	}
	if resp, _ := bob.do("GET", "/usage?key="+keyID, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("bob reading alice's key usage: %d", resp.StatusCode)
	}
	if resp, _ := alice.do("POST", "/keys/"+keyID+"/revoke", url.Values{}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("alice revoking her key: %d", resp.StatusCode)
	}
	if _, list := alice.do("GET", "/keys", nil); !strings.Contains(list, "revoked") {
		t.Fatal("key not revoked")
	}
}

func TestUsagePagesDownloadsAndCursorOwnership(t *testing.T) {
	email, alice := signUp(t)
	_, bob := signUp(t)
	user := userOf(t, email)
	store := openLedger(t)
	now := time.Now().UTC()
	var recs []usagelog.Record
	for i := range 120 {
		recs = append(recs, usagelog.Record{RequestID: fmt.Sprintf("%s-r%03d", user, i), Time: now.Add(-time.Duration(i) * time.Minute),
			User: user, KeyID: "key_x", Model: []string{"m-a", "m-b"}[i%2], Cost: money.Nanos(1000), Currency: "USD", ClientIP: "203.0.113.9"})
	}
	if _, err := store.InsertUsage(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	resp, body := alice.do("GET", "/usage?model=m-a", nil)
	if resp.StatusCode != 200 || strings.Count(body, "<td>m-a</td>") != 50 || !strings.Contains(body, "before=") {
		t.Fatalf("usage page: %d, %d rows", resp.StatusCode, strings.Count(body, "<td>m-a</td>"))
	}
	resp, body = alice.do("GET", "/usage?format=csv&model=m-b", nil)
	if resp.StatusCode != 200 || strings.Count(body, "\n") != 61 {
		t.Fatalf("csv: %d, %d lines", resp.StatusCode, strings.Count(body, "\n"))
	}
	if resp, _ := bob.do("GET", "/usage?before="+recs[0].RequestID, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("bob paging from alice's row: %d", resp.StatusCode)
	}
	if resp, body := alice.do("GET", "/", nil); !strings.Contains(body, "m-a") || resp.StatusCode != 200 {
		t.Fatalf("overview legend: %s", body)
	}

	// IP opt-out: past rows lose their address, and new ones are stored without.
	if resp, _ := alice.do("POST", "/account/ip-logging", url.Values{}); resp.StatusCode != 200 {
		t.Fatalf("opt out: %d", resp.StatusCode)
	}
	late := usagelog.Record{RequestID: user + "-late", Time: now, User: user, Currency: "USD", ClientIP: "203.0.113.9"}
	if _, err := store.InsertUsage(context.Background(), []usagelog.Record{late}); err != nil {
		t.Fatal(err)
	}
	_, js := alice.do("GET", "/usage?format=json", nil)
	if strings.Contains(js, "203.0.113.9") || !strings.Contains(js, "-late") {
		t.Fatal("usage rows still carry the client IP after the opt-out")
	}
}

func TestSessionsListAndEnd(t *testing.T) {
	email, c := signUp(t)
	other := newClient(t)
	other.do("POST", "/login", url.Values{"email": {email}, "password": {"correct horse battery"}}, "User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0")
	_, body := c.do("GET", "/sessions", nil)
	if !strings.Contains(body, "Firefox · Linux") || strings.Count(body, "/end\"") != 2 {
		t.Fatalf("sessions page: %s", body)
	}
	// End every session but this one (the row that says so).
	for _, row := range strings.Split(body, "<tr>") {
		if ids := regexpAll(row, "/sessions/", "/end"); len(ids) == 1 && !strings.Contains(row, "this one") {
			c.do("POST", "/sessions/"+ids[0]+"/end", url.Values{})
		}
	}
	if resp, _ := c.do("GET", "/", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("this session ended too: %d", resp.StatusCode)
	}
	if resp, _ := other.do("GET", "/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("an ended session still works: %d", resp.StatusCode)
	}
}

// regexpAll returns every text between open and close in s.
func regexpAll(s, open, close string) []string {
	var out []string
	for {
		i := strings.Index(s, open)
		if i < 0 {
			return out
		}
		s = s[i+len(open):]
		j := strings.Index(s, close)
		if j < 0 {
			return out
		}
		out = append(out, s[:j])
		s = s[j:]
	}
}

func TestDeleteAccount(t *testing.T) {
	email, c := signUp(t)
	resp, body := c.do("GET", "/account/export", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, email) {
		t.Fatalf("export: %d", resp.StatusCode)
	}
	resp, body = c.do("POST", "/account/delete", url.Values{"current_password": {"correct horse battery"}, "confirm": {"on"}})
	if resp.StatusCode != 200 || !strings.Contains(body, "deleted") {
		t.Fatalf("delete: %d %s", resp.StatusCode, body)
	}
	if resp, _ := c.do("POST", "/login", url.Values{"email": {email}, "password": {"correct horse battery"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("sign-in after delete: %d", resp.StatusCode)
	}
}

func TestChineseFromAcceptLanguage(t *testing.T) {
	startCaddy(t)
	c := newClient(t)
	if _, body := c.do("GET", "/login", nil, "Accept-Language", "zh-CN,zh;q=0.9"); !strings.Contains(body, "登录") {
		t.Fatal("no Chinese for zh-CN")
	}
	if _, body := c.do("GET", "/login?lang=en", nil, "Accept-Language", "zh-CN"); !strings.Contains(body, "Sign in") {
		t.Fatal("lang=en ignored")
	}
}

func openLedger(tb testing.TB) *usagelog.Store {
	tb.Helper()
	s, err := usagelog.Open(ledgerPath())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func userOf(tb testing.TB, email string) string {
	tb.Helper()
	s := openLedger(tb)
	l, err := s.LoginByEmail(context.Background(), email)
	if err != nil {
		tb.Fatal(err)
	}
	return l.User.ID
}

// An erasure by the operator (the admin API, as `caddy aitoken users
// delete` does) signs the customer's browsers out: the session cookie no
// longer opens a page, and the sessions, with the addresses and browsers
// they kept, are gone from Redis.
func TestAdminEraseEndsSessions(t *testing.T) {
	email, c := signUp(t)
	if resp, _ := c.do("GET", "/sessions", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("sessions page before: %d", resp.StatusCode)
	}
	user := userOf(t, email)
	rdb := redisClient(t)
	if n := rdb.SCard(context.Background(), billing.DashSessionsKey(user)).Val(); n != 1 {
		t.Fatalf("%d sessions in Redis before the erasure, want 1", n)
	}
	if st, b := adminCall(t, "DELETE", "/aitoken/users/"+user, ""); st != http.StatusOK {
		t.Fatalf("erase: %d %s", st, b)
	}
	for _, page := range []string{"/", "/sessions"} {
		if resp, _ := c.do("GET", page, nil); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("%s after the erasure: %d, want a redirect to sign in", page, resp.StatusCode)
		}
	}
	if resp, _ := c.do("POST", "/billing/topup", url.Values{"amount": {"10"}}); resp.StatusCode == http.StatusSeeOther &&
		strings.Contains(resp.Header.Get("Location"), "stripe") {
		t.Fatal("an erased account's session started a top-up")
	}
	sum := sha256.Sum256([]byte(c.session()))
	if n := rdb.Exists(context.Background(), billing.DashSessionKey(hex.EncodeToString(sum[:]))).Val(); n != 0 {
		t.Fatal("the session, with its address and browser, is still in Redis")
	}
	if n := rdb.Exists(context.Background(), billing.DashSessionsKey(user)).Val(); n != 0 {
		t.Fatal("the user's set of sessions is still in Redis")
	}
}
