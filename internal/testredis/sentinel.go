package testredis

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// StartReplica runs a redis-server replicating master (--replicaof), with
// extra options args, and returns once its replication link is up, so it
// holds master's data. It is stopped by tb.Cleanup.
func StartReplica(tb testing.TB, master *Server, args ...string) *Server {
	tb.Helper()
	args = append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port)}, args...)
	s := StartWith(tb, args...)
	if err := waitFor(readyTimeout, func() error {
		info, err := Info(s.Addr, "replication")
		if err != nil {
			return err
		}
		if st := info["master_link_status"]; st != "up" {
			return fmt.Errorf("master_link_status %q", st)
		}
		return nil
	}); err != nil {
		tb.Fatalf("testredis: replica %s of %s: %v%s", s.Addr, master.Addr, err, logTail(filepath.Join(s.Dir, "redis.log")))
	}
	return s
}

// WaitReplicated waits until replica has applied everything master had
// written when it was called (its slave_repl_offset reaches master's
// master_repl_offset), so killing master then loses nothing. It fails the
// test after 10s. (WAIT would not do: it counts only the writes of its own
// connection.)
func WaitReplicated(tb testing.TB, master, replica *Server) {
	tb.Helper()
	info, err := Info(master.Addr, "replication")
	if err != nil {
		tb.Fatalf("testredis: master %s INFO: %v", master.Addr, err)
	}
	want, err := strconv.ParseInt(info["master_repl_offset"], 10, 64)
	if err != nil {
		tb.Fatalf("testredis: master %s: master_repl_offset %q: %v", master.Addr, info["master_repl_offset"], err)
	}
	err = waitFor(readyTimeout, func() error {
		info, err := Info(replica.Addr, "replication")
		if err != nil {
			return err
		}
		if st := info["master_link_status"]; st != "up" {
			return fmt.Errorf("master_link_status %q", st)
		}
		if got, _ := strconv.ParseInt(info["slave_repl_offset"], 10, 64); got < want {
			return fmt.Errorf("slave_repl_offset %d < master offset %d", got, want)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("testredis: replica %s of %s: %v", replica.Addr, master.Addr, err)
	}
}

// SentinelConfig tunes a sentinel started by StartSentinel. Zero fields take
// the defaults, chosen so a test failover takes a second or two.
type SentinelConfig struct {
	// Quorum is how many sentinels must agree the master is down. Default 1.
	Quorum int
	// DownAfter is how long the master must not answer to be thought down.
	// Default 500ms.
	DownAfter time.Duration
	// FailoverTimeout bounds a failover (and spaces retries). Default 2s.
	FailoverTimeout time.Duration
	// Extra are more sentinel.conf lines, e.g. "sentinel parallel-syncs m 1".
	Extra []string
}

// StartSentinel runs a Redis Sentinel (redis-server <conf> --sentinel) on a
// free loopback port monitoring master under masterName, and returns once it
// answers PING. Its internal periods are shortened for tests (see
// sentinelDebug; needs Redis 7.0 or later). It is stopped by tb.Cleanup. Its config file, which the
// sentinel rewrites as it learns, is sentinel.conf in its Dir. The sentinel
// discovers master's replicas on its own; WaitSentinelReplicas waits for
// that before a test kills the master.
func StartSentinel(tb testing.TB, masterName string, master *Server, cfg SentinelConfig) *Server {
	tb.Helper()
	if masterName == "" || strings.ContainsAny(masterName, " \t\r\n\"'") {
		tb.Fatalf("testredis: bad sentinel master name %q", masterName)
	}
	if cfg.Quorum <= 0 {
		cfg.Quorum = 1
	}
	if cfg.DownAfter <= 0 {
		cfg.DownAfter = 500 * time.Millisecond
	}
	if cfg.FailoverTimeout <= 0 {
		cfg.FailoverTimeout = 2 * time.Second
	}
	lines := []string{
		"sentinel resolve-hostnames no",
		fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", masterName, master.Port, cfg.Quorum),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", masterName, cfg.DownAfter.Milliseconds()),
		fmt.Sprintf("sentinel failover-timeout %s %d", masterName, cfg.FailoverTimeout.Milliseconds()),
	}
	lines = append(lines, cfg.Extra...)
	dir := tb.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		tb.Fatalf("testredis: %v", err)
	}
	return startTB(tb, dir, conf, nil, sentinelDebug)
}

// sentinelDebug shortens internal sentinel periods that are not config
// options, re-applied after every (re)start:
//   - info-period: INFO to master and replicas every 1s instead of 10s, so
//     the sentinel learns of replicas, and of their link state, at once,
//     and never finds a replica's INFO too old to promote it;
//   - tilt-period: a sentinel stalled for over 2s (a loaded CI machine)
//     enters TILT mode and will not fail over until it has run normally for
//     this long; 1s instead of 30s.
var sentinelDebug = []string{"SENTINEL", "DEBUG", "info-period", "1000", "tilt-period", "1000"}

// WaitSentinelReplicas waits until sentinel knows at least n replicas of
// masterName that it is connected to and that report their link to the
// master up: the state in which it can fail over at once. It fails the test
// after 10s.
func WaitSentinelReplicas(tb testing.TB, sentinel *Server, masterName string, n int) {
	tb.Helper()
	err := waitFor(readyTimeout, func() error {
		reply, err := Do(sentinel.Addr, "SENTINEL", "REPLICAS", masterName)
		if err != nil {
			return err
		}
		list, _ := reply.([]any)
		good := 0
		var seen []string
		for _, r := range list {
			f := fields(r)
			seen = append(seen, fmt.Sprintf("%s flags=%s link=%s", f["name"], f["flags"], f["master-link-status"]))
			if f["flags"] == "slave" && f["master-link-status"] == "ok" {
				good++
			}
		}
		if good < n {
			return fmt.Errorf("%d of %d replicas ready: %v", good, n, seen)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("testredis: sentinel %s, master %s: %v%s", sentinel.Addr, masterName, err,
			logTail(filepath.Join(sentinel.Dir, "redis.log")))
	}
}

// SentinelMasterAddr asks the sentinel at addr where the master masterName
// is now (SENTINEL GET-MASTER-ADDR-BY-NAME), as host:port.
func SentinelMasterAddr(addr, masterName string) (string, error) {
	reply, err := Do(addr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", masterName)
	if err != nil {
		return "", err
	}
	hp, _ := reply.([]any)
	if len(hp) != 2 {
		return "", fmt.Errorf("sentinel %s does not know master %q", addr, masterName)
	}
	host, _ := hp[0].(string)
	port, _ := hp[1].(string)
	return net.JoinHostPort(host, port), nil
}

// Info runs INFO section on the server at addr and returns its fields.
func Info(addr, section string) (map[string]string, error) {
	reply, err := Do(addr, "INFO", section)
	if err != nil {
		return nil, err
	}
	text, ok := reply.(string)
	if !ok {
		return nil, fmt.Errorf("INFO: unexpected reply %T", reply)
	}
	m := make(map[string]string)
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = v
		}
	}
	return m, nil
}

// Do sends one command to the server at addr over a fresh connection and
// returns its reply: a string for simple and bulk strings, int64 for
// integers, []any for arrays, nil for a null. An error reply is returned as
// an error.
func Do(addr string, args ...string) (any, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return nil, err
	}
	return readReply(bufio.NewReader(conn))
}

func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, errors.New(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		list := make([]any, n)
		for i := range list {
			if list[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return list, nil
	default:
		return nil, fmt.Errorf("unexpected reply %q", line)
	}
}

// fields turns a flat [k1 v1 k2 v2 ...] array reply into a map.
func fields(reply any) map[string]string {
	list, _ := reply.([]any)
	m := make(map[string]string, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		k, _ := list[i].(string)
		v, _ := list[i+1].(string)
		m[k] = v
	}
	return m
}

// waitFor polls check every 20ms until it returns nil or timeout passes,
// and then returns its last error.
func waitFor(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LogTail returns up to the last n bytes of the server's log file, or "" if
// it cannot be read. Useful in failure messages.
func (s *Server) LogTail(n int) string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	if err != nil {
		return ""
	}
	if n >= 0 && len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
