package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/freeport"
)

const (
	readyTimeout = 15 * time.Second
	stopTimeout  = 10 * time.Second
	slowStart    = time.Second // a start slower than this is logged
)

// nodeConfig is one caddy node: its ports and directories stay the same
// across restarts.
type nodeConfig struct {
	name      string
	adminPort int
	httpPort  int
	dir       string // storage, spool, HOME, log
	database  string // "" for a gateway-only node
	redisDB   int    // database number on the shared redis-server
	extra     string // more aitoken global options, one per line
	logShown  atomic.Bool
	started   bool // once started, restarts keep the ports
}

// nextDB hands every test its own Redis database on the shared server, so
// one test's ledger never sees another's keys and accounts.
var nextDB atomic.Int32

// newRedisDB returns an unused Redis database number.
func newRedisDB(t *testing.T) int {
	t.Helper()
	db := int(nextDB.Add(1))
	if db > 15 {
		t.Fatal("out of Redis databases (16)")
	}
	return db
}

// redisClient is a go-redis client on a test's database.
func redisClient(db int) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: redisSrv.Addr, DB: db})
}

// newNode picks free ports and a directory for a node on Redis database db.
func newNode(t *testing.T, name string, ledger bool, db int) *nodeConfig {
	t.Helper()
	dir := t.TempDir()
	n := &nodeConfig{name: name, adminPort: freeport.For(t), httpPort: freeport.For(t), dir: dir, redisDB: db}
	if ledger {
		n.database = filepath.Join(dir, "ledger.db")
	}
	return n
}

func (n *nodeConfig) adminURL() string { return "http://127.0.0.1:" + strconv.Itoa(n.adminPort) }
func (n *nodeConfig) siteURL() string  { return "http://127.0.0.1:" + strconv.Itoa(n.httpPort) }

// caddyfile is the node's configuration: the test-model price, a 100ms
// flush and a spool directory of its own.
func (n *nodeConfig) caddyfile() string {
	var db string
	if n.database != "" {
		db = "\t\tdatabase " + n.database + "\n"
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	storage file_system %s
	skip_install_trust
	persist_config off
	aitoken {
		redis %s
%s		spool_dir %s
		price test-model input 1.00 cached_input 0.10 output 2.00
		flush_interval 100ms
%s	}
}

http://127.0.0.1:%d {
	route /v1/* {
		aitoken
		reverse_proxy %s
	}
}
`, n.adminPort, filepath.Join(n.dir, "storage"), fmt.Sprintf("redis://%s/%d", redisSrv.Addr, n.redisDB), db, filepath.Join(n.dir, "spool"),
		n.extra, n.httpPort, upstreamURL)
}

// caddyProc is one running caddy process.
type caddyProc struct {
	node *nodeConfig
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, valid after done
}

// startCaddy writes the node's Caddyfile, runs `caddy run` and waits until
// the admin API answers and the site serves (a keyless request gets 401).
// On a node's first start a port taken since it was picked is replaced by
// another; a restart keeps the node's ports.
func startCaddy(t *testing.T, n *nodeConfig) *caddyProc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, log, err := launch(t, n)
		if err == nil {
			n.started = true
			return p
		}
		if !n.started && attempt < 3 && bytes.Contains(log, []byte("address already in use")) {
			t.Logf("caddy %s: a port was taken (%v); picking others", n.name, err)
			n.adminPort, n.httpPort = freeport.For(t), freeport.For(t)
			continue
		}
		t.Fatalf("caddy %s not ready: %v\n%s", n.name, err, tail(log, 6000))
	}
}

// launch starts caddy once; on failure it returns the process's log.
func launch(t *testing.T, n *nodeConfig) (*caddyProc, []byte, error) {
	t.Helper()
	cfg := filepath.Join(n.dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(n.caddyfile()), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(n.dir, "caddy.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own descriptor
	fmt.Fprintf(logf, "==== start %s %s\n", n.name, time.Now().Format(time.RFC3339Nano))
	thisRun := func() []byte {
		b, _ := os.ReadFile(logPath)
		if i := bytes.LastIndex(b, []byte("==== start")); i >= 0 {
			b = b[i:]
		}
		return b
	}

	cmd := exec.Command(caddyBin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Dir = n.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	home := filepath.Join(n.dir, "home")
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
		"XDG_DATA_HOME="+filepath.Join(home, "data"),
	)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start caddy %s: %v", n.name, err)
	}
	p := &caddyProc{node: n, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	begun := time.Now()
	if err := p.waitReady(); err != nil {
		p.kill()
		return nil, thisRun(), err
	}
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() && !n.logShown.Swap(true) {
			b, _ := os.ReadFile(logPath)
			t.Logf("caddy %s log (tail, without the admin API's request lines):\n%s", n.name, tail(withoutAdminRequests(b), 12000))
		}
	})
	if d := time.Since(begun); d > slowStart {
		t.Logf("caddy %s took %s to be ready; its log:\n%s", n.name, d.Round(time.Millisecond), tail(thisRun(), 6000))
	}
	return p, nil, nil
}

func (p *caddyProc) waitReady() error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("caddy exited: %v", p.err)
		default:
		}
		last = func() error {
			resp, err := c.Get(p.node.adminURL() + "/config/")
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || len(bytes.TrimSpace(b)) == 0 || string(bytes.TrimSpace(b)) == "null" {
				return fmt.Errorf("admin /config/: %d %s", resp.StatusCode, b)
			}
			resp, err = c.Get(p.node.siteURL() + "/v1/models")
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				return fmt.Errorf("site: GET /v1/models without a key: %d, want 401", resp.StatusCode)
			}
			return nil
		}()
		if last == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("after %s: %v", readyTimeout, last)
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *caddyProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop asks caddy to shut down gracefully (SIGTERM), and kills it after
// stopTimeout.
func (p *caddyProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Errorf("caddy %s did not stop within %s of SIGTERM; killing it", p.node.name, stopTimeout)
		p.kill()
	}
}

// withoutAdminRequests drops the admin API's "received request" lines from
// a caddy log: a test polls the admin API, and those lines would push what
// explains a failure out of the tail it shows.
func withoutAdminRequests(b []byte) []byte {
	var out []byte
	for line := range bytes.Lines(b) {
		if !bytes.Contains(line, []byte(`"logger":"admin.api","msg":"received request"`)) {
			out = append(out, line...)
		}
	}
	return out
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// ---- admin API ----

var adminClient = &http.Client{Timeout: 30 * time.Second}

// adminDo sends a JSON request to a node's admin API and decodes a JSON
// answer into out (when not nil). It returns the status.
func adminDo(t *testing.T, n *nodeConfig, method, path string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, n.adminURL()+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		t.Fatalf("admin %s %s on %s: %v", method, path, n.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("admin %s %s: decoding %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

// mustAdmin is adminDo that fails the test unless the status is want.
func mustAdmin(t *testing.T, n *nodeConfig, method, path string, in, out any, want int) {
	t.Helper()
	var raw json.RawMessage
	st := adminDo(t, n, method, path, in, &raw)
	if st != want {
		t.Fatalf("admin %s %s on %s: status %d, want %d", method, path, n.name, st, want)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("admin %s %s: decoding %q: %v", method, path, raw, err)
		}
	}
}

type userView struct {
	ID      string `json:"id"`
	Balance string `json:"balance"`
	Held    string `json:"held"`
}

type keyView struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

type usageRecord struct {
	RequestID    string `json:"request_id"`
	User         string `json:"user"`
	KeyID        string `json:"key_id"`
	Model        string `json:"model"`
	Stream       bool   `json:"stream"`
	Status       int    `json:"status"`
	Outcome      string `json:"outcome"`
	InputTokens  int64  `json:"input_tokens"`
	OutputTokens int64  `json:"output_tokens"`
	Cost         string `json:"cost"`
	Estimated    bool   `json:"estimated"`
}

type reconcileReport struct {
	Flushed  int               `json:"flushed"`
	Accounts []json.RawMessage `json:"accounts"`
	Keys     []json.RawMessage `json:"keys"`
	InSync   bool              `json:"in_sync"`
}

// account creates a user with credits and one key on a ledger node.
func account(t *testing.T, ledger *nodeConfig, email, credits string) (user userView, key keyView) {
	t.Helper()
	mustAdmin(t, ledger, "POST", "/aitoken/users", map[string]string{"email": email}, &user, http.StatusCreated)
	if user.ID == "" {
		t.Fatal("POST /aitoken/users: no id")
	}
	mustAdmin(t, ledger, "POST", "/aitoken/users/"+user.ID+"/credits", map[string]string{"amount": credits}, nil, http.StatusOK)
	mustAdmin(t, ledger, "POST", "/aitoken/keys", map[string]string{"user": user.ID}, &key, http.StatusCreated)
	if key.ID == "" || key.Key == "" {
		t.Fatalf("POST /aitoken/keys: %+v", key)
	}
	return user, key
}

func getUser(t *testing.T, ledger *nodeConfig, id string) userView {
	t.Helper()
	var u userView
	mustAdmin(t, ledger, "GET", "/aitoken/users/"+id, nil, &u, http.StatusOK)
	checkMoneyFormat(t, "balance", u.Balance)
	checkMoneyFormat(t, "held", u.Held)
	return u
}

// usageOf lists a user's usage rows; it fails when the user has so many
// that the admin API's limit (1000) may have cut the list.
func usageOf(t *testing.T, ledger *nodeConfig, user string) []usageRecord {
	t.Helper()
	var out struct {
		Records []usageRecord `json:"records"`
	}
	mustAdmin(t, ledger, "GET", "/aitoken/usage?user="+user+"&limit=1000", nil, &out, http.StatusOK)
	if len(out.Records) >= 1000 {
		t.Fatalf("user %s has %d usage rows: the listing may be cut at 1000; make the test lighter", user, len(out.Records))
	}
	for _, r := range out.Records {
		checkMoneyFormat(t, "cost", r.Cost)
	}
	return out.Records
}

func reconcile(t *testing.T, ledger *nodeConfig) reconcileReport {
	t.Helper()
	var rep reconcileReport
	mustAdmin(t, ledger, "POST", "/aitoken/reconcile", nil, &rep, http.StatusOK)
	return rep
}

// inFlight is how many settlements node has not yet seen confirmed by
// Redis, as an operator reads it: those written ahead to its journal
// (aitoken_settlements_in_flight; a node lets lease settlements gather for
// up to a second) and those waiting in its spool (aitoken_spool_entries;
// after a restart, what the journal held goes there and is replayed in the
// background). Redis and the ledger can agree while some are on their way.
func inFlight(t *testing.T, node *nodeConfig) int {
	t.Helper()
	resp, err := http.Get(node.adminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, gauge := range []string{"aitoken_settlements_in_flight", "aitoken_spool_entries"} {
		m := regexp.MustCompile(`(?m)^` + gauge + ` ([0-9]+)$`).FindSubmatch(body)
		if m == nil {
			t.Fatalf("%s: no %s in /metrics", node.name, gauge)
		}
		n, err := strconv.Atoi(string(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}

// moneyFormat is money as the API writes it: a decimal string with 9 places.
var moneyFormat = regexp.MustCompile(`^-?[0-9]+\.[0-9]{9}$`)

func checkMoneyFormat(t *testing.T, field, s string) {
	t.Helper()
	if !moneyFormat.MatchString(s) {
		t.Errorf("%s %q: want a decimal string with 9 places", field, s)
	}
}

// nanos parses a decimal money string ("0.000022000", "-1.5") into nanos.
func nanos(t *testing.T, s string) int64 {
	t.Helper()
	n, err := money.ParseNanos(s)
	if err != nil {
		t.Fatalf("money %q: %v", s, err)
	}
	return int64(n)
}

// ---- API client ----

// chatBody is a small chat request for the priced test model.
func chatBody(stream bool) []byte {
	b, _ := json.Marshal(map[string]any{
		"model":    "test-model",
		"stream":   stream,
		"messages": []map[string]string{{"role": "user", "content": "Hello"}},
	})
	return b
}

// chatResult is what a client saw of one chat request.
type chatResult struct {
	status    int
	requestID string
	// complete is true when the whole answer arrived: for a stream, the
	// "data: [DONE]" event and a clean end of the body.
	complete bool
	body     []byte
	err      error
}

// chat sends one chat completion with a key and reads the whole answer.
func chat(ctx context.Context, c *http.Client, site, key string, stream bool, mockHeaders map[string]string) chatResult {
	req, err := http.NewRequestWithContext(ctx, "POST", site+"/v1/chat/completions", bytes.NewReader(chatBody(stream)))
	if err != nil {
		return chatResult{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	for k, v := range mockHeaders {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return chatResult{err: err}
	}
	defer resp.Body.Close()
	res := chatResult{status: resp.StatusCode, requestID: resp.Header.Get("X-Request-Id")}
	res.body, res.err = io.ReadAll(resp.Body)
	if res.err != nil || resp.StatusCode != http.StatusOK {
		return res
	}
	if stream {
		res.complete = bytes.Contains(res.body, []byte("\ndata: [DONE]\n")) || bytes.HasPrefix(res.body, []byte("data: [DONE]\n"))
	} else {
		var v struct {
			Choices []json.RawMessage `json:"choices"`
		}
		res.complete = json.Unmarshal(res.body, &v) == nil && len(v.Choices) > 0
	}
	return res
}

// idSet is a concurrency-safe set of request ids.
type idSet struct {
	mu  sync.Mutex
	ids map[string]int
}

func (s *idSet) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = make(map[string]int)
	}
	s.ids[id]++
}

func (s *idSet) snapshot() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.ids))
	for k, v := range s.ids {
		out[k] = v
	}
	return out
}
