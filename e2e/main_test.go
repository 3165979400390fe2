package e2e

import (
	"errors"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/internal/mockupstream"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

var (
	// caddyBin is the caddy binary TestMain built.
	caddyBin string
	// redisSrv is the redis-server shared by the tests (each test uses its
	// own users, so they do not see each other's accounts).
	redisSrv *testredis.Server
	// upstreamURL is the mock provider's base URL.
	upstreamURL string
	// buildTime is how long building caddyBin took.
	buildTime time.Duration
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Fprintln(os.Stderr, "e2e: skipped in -short mode (builds caddy and runs real processes)")
		return 0
	}
	tmp, err := os.MkdirTemp("", "aitoken-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(tmp)

	caddyBin = filepath.Join(tmp, "caddy")
	start := time.Now()
	if err := buildCaddy(caddyBin); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	buildTime = time.Since(start)
	fmt.Fprintf(os.Stderr, "e2e: built %s in %s\n", caddyBin, buildTime.Round(time.Millisecond))

	srv, stop := testredis.StartMain()
	defer stop()
	redisSrv = srv

	mock := httptest.NewServer(mockupstream.New())
	defer mock.Close()
	upstreamURL = mock.URL

	return m.Run()
}

// buildCaddy builds ./internal/testcaddy with the go command that runs
// this test.
func buildCaddy(out string) error {
	goBin, err := goCommand()
	if err != nil {
		return err
	}
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	cmd := exec.Command(goBin, "build", "-o", out, "./internal/testcaddy")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./internal/testcaddy: %w", err)
	}
	return nil
}

// goCommand is $GOROOT/bin/go when GOROOT is set, else go from PATH (which
// `go test` puts first).
func goCommand() (string, error) {
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("no go command: set GOROOT or put go in PATH")
	}
	return p, nil
}
