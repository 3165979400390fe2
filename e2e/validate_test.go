package e2e

import (
	"context"
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
