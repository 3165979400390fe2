package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/internal/childproc"
	"github.com/cnaitoken/caddy-aitoken/internal/freeport"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

// benchModel is the model every benchmark request asks for; its price is
// DeepSeek's, so a huge credit lasts the whole run.
const benchModel = "deepseek-v4-flash"

// env is the set of processes one run measures: a redis-server, the mock
// provider and one caddy with two sites, bare and metered.
type env struct {
	dir      string
	redis    *testredis.Server
	rdb      *redis.Client // to the gateway's Redis, for the bench's own reads
	mock     *exec.Cmd
	mockURL  string
	caddy    *exec.Cmd
	caddyLog string
	done     chan struct{} // closed when caddy has exited
	exitErr  error         // caddy's exit status, valid after done

	adminURL   string
	bareURL    string   // site with reverse_proxy only
	aitokenURL string   // site with aitoken before the same reverse_proxy
	key        string   // API key of the bench user
	customers  []string // API keys of the many-customer scenario

	adminClient *http.Client // keep-alive pool for the admin API
}

// repoRoot finds the module root (the directory whose go.mod declares this
// module), from the working directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/cnaitoken/caddy-aitoken\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the caddy-aitoken module (no go.mod found)")
		}
		dir = parent
	}
}

// build compiles the caddy binary (./internal/testcaddy, as e2e does) and the
// mock provider into dir, unless caddyBin names a prebuilt caddy.
func build(root, dir, caddyBin string) (caddyPath, mockPath string, err error) {
	goBin := "go"
	if r := os.Getenv("GOROOT"); r != "" {
		if p := filepath.Join(r, "bin", "go"); fileExists(p) {
			goBin = p
		}
	}
	caddyPath, mockPath = caddyBin, filepath.Join(dir, "mockupstream")
	pkgs := [][2]string{{mockPath, "./cmd/mockupstream"}}
	if caddyPath != "" {
		if caddyPath, err = filepath.Abs(caddyPath); err != nil {
			return "", "", err
		}
	} else {
		caddyPath = filepath.Join(dir, "caddy")
		pkgs = append(pkgs, [2]string{caddyPath, "./internal/testcaddy"})
	}
	for _, p := range pkgs {
		// -w leaves out DWARF, which halves the link; profiles still
		// have every symbol.
		cmd := exec.Command(goBin, "build", "-ldflags=-w", "-o", p[0], p[1])
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s: %v\n%s", p[1], err, out)
		}
	}
	return caddyPath, mockPath, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// startEnv starts redis-server, the mock provider and caddy, all on free
// loopback ports, and mints the bench user's key.
func startEnv(ctx context.Context, dir, caddyPath, mockPath string) (*env, error) {
	e := &env{dir: dir, adminClient: newClient(32, 30*time.Second)}
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return e, err
	}
	var err error
	if e.redis, err = testredis.StartDir(rdir); err != nil {
		return e, err
	}
	e.rdb = redis.NewClient(&redis.Options{Addr: e.redis.Addr})
	if err = e.startMock(mockPath); err != nil {
		return e, err
	}
	if err = e.startCaddy(caddyPath); err != nil {
		return e, err
	}
	if err = e.mintKey(ctx); err != nil {
		return e, err
	}
	return e, nil
}

// startMock runs cmd/mockupstream on a free port and reads its address from
// the line it prints.
func (e *env) startMock(path string) error {
	cmd := exec.Command(path, "-addr", "127.0.0.1:0")
	cmd.SysProcAttr = childproc.SysProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start mock upstream: %w", err)
	}
	e.mock = cmd
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return fmt.Errorf("mock upstream: reading its address: %w", err)
	}
	_, url, ok := strings.Cut(strings.TrimSpace(line), " on ")
	if !ok || !strings.HasPrefix(url, "http://") {
		return fmt.Errorf("mock upstream: unexpected first line %q", line)
	}
	e.mockURL = url
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return nil
}

// caddyfile is the config: the bare site and the aitoken site proxy to the
// same mock upstream through the same route shape, so the only difference
// between them is the aitoken handler.
func (e *env) caddyfile(adminPort, barePort, aitPort int) string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	storage file_system %s
	skip_install_trust
	persist_config off
	aitoken {
		redis %s
		database %s
		spool_dir %s
		currency USD
		price %s input 0.14 cached_input 0.0028 output 0.28
		flush_interval 1s
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	route /v1/* {
		reverse_proxy %s
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	route /v1/* {
		aitoken
		reverse_proxy %s
	}
}
`, adminPort, filepath.Join(e.dir, "storage"), e.redis.URL(), filepath.Join(e.dir, "ledger.db"),
		filepath.Join(e.dir, "spool"), benchModel, barePort, e.mockURL, aitPort, e.mockURL)
}

// startCaddy writes the Caddyfile, runs `caddy run` and waits until both
// sites answer.
func (e *env) startCaddy(path string) error {
	var ports [3]int
	for i := range ports { // freeport never hands a port out twice
		p, err := freeport.Port()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	e.adminURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
	e.bareURL = "http://127.0.0.1:" + strconv.Itoa(ports[1])
	e.aitokenURL = "http://127.0.0.1:" + strconv.Itoa(ports[2])
	cfg := filepath.Join(e.dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(e.caddyfile(ports[0], ports[1], ports[2])), 0o644); err != nil {
		return err
	}
	e.caddyLog = filepath.Join(e.dir, "caddy.log")
	logf, err := os.Create(e.caddyLog)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(path, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Dir = e.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childproc.SysProcAttr()
	home := filepath.Join(e.dir, "home")
	cmd.Env = append(os.Environ(), "HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"), "XDG_DATA_HOME="+filepath.Join(home, "data"))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start caddy: %w", err)
	}
	e.caddy, e.done = cmd, make(chan struct{})
	go func() {
		e.exitErr = cmd.Wait()
		close(e.done)
	}()
	if err := e.waitReady(); err != nil {
		return fmt.Errorf("caddy not ready: %v%s", err, e.logTail())
	}
	return nil
}

// waitReady polls until the bare site proxies (200 from the mock's model
// list) and the aitoken site asks for a key (401).
func (e *env) waitReady() error {
	c := &http.Client{Timeout: time.Second}
	status := func(url string) (int, error) {
		resp, err := c.Get(url)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-e.done:
			return fmt.Errorf("caddy exited: %v", e.exitErr)
		default:
		}
		b, err1 := status(e.bareURL + "/v1/models")
		a, err2 := status(e.aitokenURL + "/v1/models")
		if last = errors.Join(err1, err2); last == nil {
			if b == http.StatusOK && a == http.StatusUnauthorized {
				return nil
			}
			last = fmt.Errorf("GET /v1/models: bare %d (want 200), aitoken without a key %d (want 401)", b, a)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return last
}

func (e *env) logTail() string {
	b, _ := os.ReadFile(e.caddyLog)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "\ncaddy log (tail):\n" + string(b)
}

// stopCaddy shuts caddy down gracefully (SIGTERM; SIGKILL after 15s).
func (e *env) stopCaddy() {
	if e.caddy == nil {
		return
	}
	_ = e.caddy.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(15 * time.Second):
		_ = e.caddy.Process.Kill()
		<-e.done
	}
	e.caddy = nil
}

// close stops every process the env started.
func (e *env) close() {
	e.stopCaddy()
	if e.mock != nil {
		_ = e.mock.Process.Signal(syscall.SIGTERM)
		_ = e.mock.Wait()
	}
	if e.rdb != nil {
		_ = e.rdb.Close()
	}
	if e.redis != nil {
		e.redis.Stop()
	}
}

// releaseMock lets every stream the mock holds (X-Mock-Hold) go on.
func (e *env) releaseMock(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, "POST", e.mockURL+"/mock/release", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("releasing the mock's held streams: %w", err)
	}
	resp.Body.Close()
	return nil
}
