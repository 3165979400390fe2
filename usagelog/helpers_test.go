package usagelog

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// openStore opens a fresh ledger in a temporary directory.
func openStore(tb testing.TB) *Store {
	tb.Helper()
	s, err := Open(filepath.Join(tb.TempDir(), "ledger.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// testRedis is a redis-server started for one test.
type testRedis struct {
	bin    string
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
}

// startRedis starts a throwaway redis-server on a free local port (never
// 6379), without persistence, and kills it when the test ends.
func startRedis(tb testing.TB) (*redis.Client, *testRedis) {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Skip("redis-server not installed")
	}
	for attempt := 0; attempt < 5; attempt++ {
		tr := &testRedis{bin: bin, port: freePort(tb)}
		if tr.start(tb) {
			rdb := redis.NewClient(&redis.Options{Addr: tr.addr()})
			tb.Cleanup(func() {
				rdb.Close()
				tr.kill()
			})
			return rdb, tr
		}
		// The port was taken in the meantime: try another.
	}
	tb.Fatal("redis-server did not start")
	return nil, nil
}

func (tr *testRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(tr.port) }

// start runs redis-server on tr.port and reports whether it answers PING.
func (tr *testRedis) start(tb testing.TB) bool {
	tb.Helper()
	tr.cmd = exec.Command(tr.bin, "--port", strconv.Itoa(tr.port), "--save", "", "--appendonly", "no",
		"--bind", "127.0.0.1")
	if err := tr.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tr.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(tr.cmd, tr.exited)
	rdb := redis.NewClient(&redis.Options{Addr: tr.addr(), MaxRetries: -1})
	defer rdb.Close()
	if waitPing(rdb, tr.exited) {
		return true
	}
	tr.kill()
	return false
}

// kill stops the server, as a crash would.
func (tr *testRedis) kill() {
	tr.cmd.Process.Kill()
	<-tr.exited
}

func freePort(tb testing.TB) int {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port != 6379 {
			return port
		}
	}
}

func waitPing(rdb *redis.Client, exited <-chan struct{}) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// rec returns a valid record with the given request ID, user and time.
func rec(id, user string, t time.Time) Record {
	return Record{
		RequestID:         id,
		Time:              t,
		User:              user,
		KeyID:             "k_" + user,
		Model:             "deepseek-v4-flash",
		Endpoint:          "/v1/chat/completions",
		Stream:            true,
		Status:            200,
		Outcome:           "ok",
		InputTokens:       1200,
		CachedInputTokens: 1000,
		OutputTokens:      350,
		ReasoningTokens:   100,
		Cost:              billing.Nanos(123_456),
		Currency:          "USD",
		DurationMS:        900,
		TTFTMS:            120,
		ClientIP:          "203.0.113.7",
	}
}

// countRows returns the number of rows in table.
func countRows(tb testing.TB, s *Store, table string) int {
	tb.Helper()
	var n int
	if err := s.rd.QueryRow(fmt.Sprintf("SELECT COUNT(*) FROM %s", table)).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}
