package e2e

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestValidateLeavesARunningNodesFilesAlone runs `caddy validate` on the
// config of a running node, with the node's environment (as an operator
// does before a reload, e.g. `docker exec caddy caddy validate ...`).
// Validate provisions the aitoken app in a second process; that process
// must not delete or replace the running node's settlement journal or
// spool files: the node keeps writing into its open descriptors, so
// whatever it writes ahead (journal) or spools (fsynced) afterwards would go
// to unlinked files and be gone after a crash.
func TestValidateLeavesARunningNodesFilesAlone(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	db := newRedisDB(t)
	node := newNode(t, "validated", true, db)
	proc := startCaddy(t, node)
	_, key := account(t, node, "validate@example.com", "10.00")
	hc := &http.Client{Timeout: 10 * time.Second}
	for range 5 {
		if res := chat(context.Background(), hc, node.siteURL(), key.Key, false, nil); res.err != nil || res.status != http.StatusOK {
			t.Fatalf("chat: %d %v", res.status, res.err)
		}
	}
	before := openFiles(t, proc.cmd.Process.Pid)
	if len(before) == 0 {
		t.Fatal("the node has no spool or journal file open")
	}

	home := filepath.Join(node.dir, "home")
	cmd := exec.Command(caddyBin, "validate", "--config", filepath.Join(node.dir, "Caddyfile"), "--adapter", "caddyfile")
	cmd.Dir = node.dir
	cmd.Env = append(os.Environ(), "HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"), "XDG_DATA_HOME="+filepath.Join(home, "data"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, tail(out, 4000))
	}

	for _, f := range openFiles(t, proc.cmd.Process.Pid) {
		if strings.HasSuffix(f, " (deleted)") {
			t.Errorf("after `caddy validate`, the running node writes to a file no longer in the directory: %s", f)
		}
	}
}

// openFiles lists the spool and journal files pid has open.
func openFiles(t *testing.T, pid int) []string {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		base := filepath.Base(strings.TrimSuffix(target, " (deleted)"))
		if strings.HasPrefix(base, "spool-") || strings.HasPrefix(base, "journal-") {
			out = append(out, target)
		}
	}
	return out
}

// TestRedisDownValidatesButDoesNotRun: `caddy validate` of a ledger node
// whose Redis is down and whose database and spool directories do not exist
// yet succeeds and creates neither; `caddy run` of the same config fails,
// saying that Redis cannot be reached.
func TestRedisDownValidatesButDoesNotRun(t *testing.T) {
	n := newNode(t, "redis-down", true, 0)
	n.database = filepath.Join(n.dir, "ledger", "ledger.db")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "redis://" + ln.Addr().String() + "/0" // closed below: nothing listens
	ln.Close()
	cfg := filepath.Join(n.dir, "Caddyfile")
	up := "redis://" + redisSrv.Addr + "/0"
	if !strings.Contains(n.caddyfile(), up) {
		t.Fatalf("the node's Caddyfile has no %s", up)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(n.caddyfile(), up, down, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(n.dir, "home")
	env := append(os.Environ(), "HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"), "XDG_DATA_HOME="+filepath.Join(home, "data"))

	cmd := exec.Command(caddyBin, "validate", "--config", cfg, "--adapter", "caddyfile")
	cmd.Dir, cmd.Env = n.dir, env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate with redis down: %v\n%s", err, tail(out, 4000))
	}
	for _, p := range []string{filepath.Dir(n.database), filepath.Join(n.dir, "spool")} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("caddy validate created %s (stat: %v)", p, err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	cmd = exec.CommandContext(ctx, caddyBin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Dir, cmd.Env = n.dir, env
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("caddy run with redis down did not exit within %s\n%s", readyTimeout, tail(out, 4000))
	}
	if err == nil {
		t.Fatalf("caddy run with redis down exited 0\n%s", tail(out, 4000))
	}
	if !bytes.Contains(out, []byte("redis")) || !bytes.Contains(out, []byte("connection refused")) {
		t.Fatalf("caddy run with redis down: the error does not say redis cannot be reached\n%s", tail(out, 4000))
	}
}
