package caddymodule_test

import (
	"errors"
	"fmt"
	"go/build"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The Stripe settings of the test config. The secrets reach Caddy only as
// {env.*} placeholders, so tests can check they never appear in its config.
const (
	testStripeKey     = "sk_test_4eC39HqLyjWDarjtT1zdp7dcAitoken"
	testWebhookSecret = "whsec_aitoken_test_secret"
)

// stripeEnv is the stripe-mock TestMain starts (when it is installed) on
// ports the config's api_base names.
var stripeEnv struct {
	httpPort, httpsPort int
	cmd                 *exec.Cmd
	err                 error // why stripe-mock is not running
}

// startStripeEnv sets the Stripe secrets in the environment and starts
// stripe-mock on free loopback ports. A missing stripe-mock is remembered,
// and fails the tests that need it.
func startStripeEnv() (stop func()) {
	os.Setenv("AITOKEN_TEST_STRIPE_KEY", testStripeKey)
	os.Setenv("AITOKEN_TEST_WEBHOOK_SECRET", testWebhookSecret)
	stripeEnv.httpPort, stripeEnv.httpsPort = loopbackPort(), loopbackPort()
	bin, err := stripeMockBinary()
	if err != nil {
		stripeEnv.err = err
		return func() {}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", stripeEnv.httpPort)
	cmd := exec.Command(bin, "-http-addr", addr, "-https-addr", fmt.Sprintf("127.0.0.1:%d", stripeEnv.httpsPort))
	cmd.SysProcAttr = stripeMockProcAttr()
	if err := cmd.Start(); err != nil {
		stripeEnv.err = fmt.Errorf("starting %s: %v", bin, err)
		return func() {}
	}
	stop = func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			stripeEnv.err = fmt.Errorf("stripe-mock did not listen on %s within 15s", addr)
			return func() {}
		}
	}
	stripeEnv.cmd = cmd
	return stop
}

// stripeMockBinary finds stripe-mock on PATH or in GOPATH/bin.
func stripeMockBinary() (string, error) {
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

func loopbackPort() int {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port != 6379 {
			return port
		}
	}
}

// withStripe adds the stripe block to the aitoken option of a test config,
// and the webhook and account routes to its site.
func withStripe(cfg string) string {
	const site = "\t}\n}\nhttp://localhost:9080 {\n"
	if !strings.Contains(cfg, site) {
		panic("withStripe: the test config's layout changed; update stripe_env_test.go")
	}
	block := fmt.Sprintf(`		stripe {
			secret_key     {env.AITOKEN_TEST_STRIPE_KEY}
			webhook_secret {env.AITOKEN_TEST_WEBHOOK_SECRET}
			success_url    https://example.com/topup/done?session_id={CHECKOUT_SESSION_ID}
			cancel_url     https://example.com/topup/cancel
			min_topup      5.00
			max_topup      500.00
			topup_rate     3 1h
			api_base       http://127.0.0.1:%d
		}
`, stripeEnv.httpPort)
	routes := `	handle /stripe/webhook {
		aitoken_stripe
	}
	route /v1/account* {
		aitoken_account
	}
`
	return strings.Replace(cfg, site, block+site+routes, 1)
}
