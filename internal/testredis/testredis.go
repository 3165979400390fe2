// Package testredis runs a real redis-server on a free loopback port for
// tests. Every server is private to its caller: its own port (never 6379), its
// own directory, no persistence (--save "" --appendonly no).
//
//	func TestX(t *testing.T) {
//		srv := testredis.Start(t) // stopped by t.Cleanup
//		opt, _ := redis.ParseURL(srv.URL())
//		...
//	}
//
// For a server shared by a whole test binary, call StartMain from TestMain.
//
// StartWith passes extra redis-server options; StartReplica and
// StartSentinel build a master, replicas and a Sentinel for failover tests
// (the sentinel is the same redis-server binary run with --sentinel):
//
//	master := testredis.Start(t)
//	replica := testredis.StartReplica(t, master)
//	sentinel := testredis.StartSentinel(t, "m", master, testredis.SentinelConfig{})
//	testredis.WaitSentinelReplicas(t, sentinel, "m", 1)
//	master.Kill() // the sentinel promotes replica
package testredis

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/internal/childproc"
	"github.com/cnaitoken/caddy-aitoken/internal/freeport"
)

// Binary is the redis-server executable: $REDIS_SERVER if set, else
// redis-server from PATH.
var Binary = binaryFromEnv()

const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
	startTries   = 5 // a free port can be taken between probe and bind
)

// ErrNotInstalled is returned (wrapped) when redis-server cannot be found.
var ErrNotInstalled = errors.New("redis-server not found in PATH; install redis-server: apt-get install redis-server")

// Server is a running (or stopped) redis-server child process.
type Server struct {
	// Addr is host:port, always 127.0.0.1:N.
	Addr string
	// Port is the TCP port, kept across Restart.
	Port int
	// Dir is the server's working directory (holds redis.log).
	Dir string

	// conf, when set, is a config file given before the options (a
	// sentinel's, which it rewrites as it learns).
	conf string
	// args are extra redis-server options, after the default ones.
	args []string
	// init are commands sent after each start, once the server answers.
	init [][]string

	fail func(format string, args ...any)

	mu   sync.Mutex
	proc *process // nil when stopped
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit error, valid after done
}

// Start runs a redis-server for one test (or benchmark) and stops it on
// tb.Cleanup. It fails the test if the server cannot be started.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb)
}

// StartWith is Start with extra redis-server options appended to the default
// ones (which they override), e.g. StartWith(tb, "--maxmemory", "10mb").
// Restart keeps them.
func StartWith(tb testing.TB, args ...string) *Server {
	tb.Helper()
	return startTB(tb, tb.TempDir(), "", args)
}

func startTB(tb testing.TB, dir, conf string, args []string, init ...[]string) *Server {
	tb.Helper()
	s, err := startDir(dir, conf, args, init...)
	if err != nil {
		tb.Fatalf("testredis: %v", err)
	}
	s.fail = func(format string, args ...any) {
		tb.Helper()
		tb.Fatalf(format, args...)
	}
	tb.Cleanup(s.Stop)
	return s
}

// StartMain runs a redis-server for a whole test binary, for use in TestMain,
// where there is no testing.TB. The returned function stops the server and
// removes its directory. On failure it prints the reason and exits with status 1.
//
//	func TestMain(m *testing.M) {
//		srv, stop := testredis.StartMain()
//		redisURL = srv.URL()
//		code := m.Run()
//		stop()
//		os.Exit(code)
//	}
func StartMain() (*Server, func()) {
	dir, err := os.MkdirTemp("", "testredis-")
	if err != nil {
		exitf("testredis: %v", err)
	}
	s, err := StartDir(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		exitf("testredis: %v", err)
	}
	return s, func() {
		s.Stop()
		_ = os.RemoveAll(dir)
	}
}

// StartDir runs a redis-server with its files in dir and returns once it
// answers PING. The caller must Stop it.
func StartDir(dir string) (*Server, error) { return startDir(dir, "", nil) }

// StartDirWith is StartDir with extra redis-server options (see StartWith).
func StartDirWith(dir string, args ...string) (*Server, error) { return startDir(dir, "", args) }

func startDir(dir, conf string, args []string, init ...[]string) (*Server, error) {
	if _, err := exec.LookPath(Binary); err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNotInstalled, err)
	}
	s := &Server{Dir: dir, conf: conf, args: append([]string(nil), args...), init: init}
	var err error
	for range startTries {
		var port int
		port, err = freeport.Port()
		if err != nil {
			return nil, err
		}
		s.Port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err = s.start(); err == nil {
			return s, nil
		}
	}
	return nil, err
}

// URL is the go-redis URL of database 0: redis://127.0.0.1:N/0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Stop shuts the server down (SIGTERM, then SIGKILL after 5s) and waits for it
// to exit. Stopping a stopped server does nothing.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

// Kill ends the server abruptly with SIGKILL, as a crash would, and waits for
// it to exit.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

// Restart stops the server if it runs and starts it again on the same port.
// The data is gone (no persistence). It fails the test that started the
// server if it does not come back (for a StartMain server: prints the reason
// and exits with status 1).
func (s *Server) Restart() {
	s.Stop()
	var err error
	for i := range startTries {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(time.Duration(i+1) * 100 * time.Millisecond) // port may linger
	}
	s.failf("testredis: restart on %s: %v", s.Addr, err)
}

// Running reports whether the server process is alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false
	}
	select {
	case <-s.proc.done:
		return false
	default:
		return true
	}
}

func (s *Server) failf(format string, args ...any) {
	if s.fail != nil {
		s.fail(format, args...)
		return
	}
	exitf(format, args...)
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return errors.New("already running")
	}
	logPath := filepath.Join(s.Dir, "redis.log")
	var argv []string
	if s.conf != "" {
		argv = append(argv, s.conf, "--sentinel")
	}
	argv = append(argv,
		"--port", strconv.Itoa(s.Port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		// A master waits 5s by default for more replicas before a full
		// sync; tests start replicas one at a time.
		"--repl-diskless-sync-delay", "0",
		"--dir", s.Dir,
		"--logfile", logPath,
		"--daemonize", "no",
	)
	argv = append(argv, s.args...)
	cmd := exec.Command(Binary, argv...)
	cmd.Dir = s.Dir
	cmd.SysProcAttr = childproc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", Binary, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	err := waitReady(s.Addr, p)
	for _, c := range s.init {
		if err != nil {
			break
		}
		if _, err = Do(s.Addr, c...); err != nil {
			err = fmt.Errorf("%s: %w", strings.Join(c, " "), err)
		}
	}
	if err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("redis-server on %s: %w%s", s.Addr, err, logTail(logPath))
	}
	s.proc = p
	return nil
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	if p == nil {
		return
	}
	s.proc = nil
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitReady polls addr with PING until it answers PONG, the process exits or
// readyTimeout passes.
func waitReady(addr string, p *process) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("exited early: %v", p.err)
		default:
		}
		if last = Ping(addr); last == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("no answer to PING after %s: %v", readyTimeout, last)
}

// Ping sends PING to the Redis server at addr over a fresh connection and
// checks for +PONG.
func Ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("unexpected reply %q", strings.TrimSpace(line))
	}
	return nil
}

func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "\nredis log:\n" + string(b)
}

func exitf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func binaryFromEnv() string {
	if b := os.Getenv("REDIS_SERVER"); b != "" {
		return b
	}
	return "redis-server"
}
