// Package stripemock starts stripe-mock (github.com/stripe/stripe-mock), the
// Stripe API stand-in the tests point the aitoken stripe block's api_base at.
package stripemock

import (
	"errors"
	"fmt"
	"go/build"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/cnaitoken/caddy-aitoken/internal/childproc"
)

// startTimeout is how long Start waits for stripe-mock to listen.
const startTimeout = 15 * time.Second

// Mock is a running stripe-mock.
type Mock struct {
	HTTPPort, HTTPSPort int
	cmd                 *exec.Cmd
}

// Binary finds stripe-mock on PATH or in GOPATH/bin.
func Binary() (string, error) {
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p, nil
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		gopath = build.Default.GOPATH
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "stripe-mock")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("stripe-mock is not installed (not on PATH, not in $(go env GOPATH)/bin); " +
		"install it with scripts/ensure-deps.sh stripe-mock (go install github.com/stripe/stripe-mock@latest)")
}

// Start starts stripe-mock serving HTTP on 127.0.0.1:httpPort and HTTPS on
// 127.0.0.1:httpsPort, and waits (up to 15s) until it accepts connections.
// The kernel kills it if the caller dies (Linux); Stop ends it otherwise.
func Start(httpPort, httpsPort int) (*Mock, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	cmd := exec.Command(bin, "-http-addr", addr, "-https-addr", fmt.Sprintf("127.0.0.1:%d", httpsPort))
	cmd.SysProcAttr = childproc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %v", bin, err)
	}
	m := &Mock{HTTPPort: httpPort, HTTPSPort: httpsPort, cmd: cmd}
	for deadline := time.Now().Add(startTimeout); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return m, nil
		}
		if time.Now().After(deadline) {
			m.Stop()
			return nil, fmt.Errorf("stripe-mock did not listen on %s within %s", addr, startTimeout)
		}
	}
}

// Stop kills stripe-mock and waits for it to exit.
func (m *Mock) Stop() {
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
}
