// Package browser runs a headless Debian chromium for the tests of web
// pages and drives it over the DevTools protocol (chromedp). Every browser
// is private to its test: a fresh temporary profile, and every chromium
// process killed on t.Cleanup.
//
//	func TestLogin(t *testing.T) {
//		b := browser.Start(t) // 1280x900; browser.Start(t, browser.Phone()) for a phone
//		b.Navigate(srv.URL + "/login")
//		b.Fill("email", "ann@example.com")
//		b.Submit(`button[type="submit"]`) // clicks, waits for the next page
//		if got := b.Text("h1"); got != "Welcome" { ... }
//		cookies := b.Cookies()
//		b.Screenshot("docs/img/login.png")
//		if p := b.Problems(); len(p) > 0 { t.Errorf("console: %q", p) }
//	}
//
// The browser is $CHROMIUM when set, else /usr/bin/chromium, else chromium
// from PATH. A missing one fails the test, saying how to install it
// (scripts/ensure-deps.sh chromium, which `make test` and CI run).
package browser

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Window sizes, in CSS pixels: the desktop default and the one of Phone.
const (
	DesktopWidth  = 1280
	DesktopHeight = 900
	PhoneWidth    = 390
	PhoneHeight   = 844
)

const (
	// startTimeout bounds the start of chromium and its first tab.
	startTimeout = 60 * time.Second
	// defaultTimeout bounds each helper of Browser (Timeout changes it).
	defaultTimeout = 20 * time.Second
	// debianPath is where Debian's chromium package puts its launcher.
	debianPath = "/usr/bin/chromium"
)

// ErrNotInstalled is returned (wrapped) by ExecPath when no chromium is found.
var ErrNotInstalled = errors.New("chromium not found; the browser tests need it: " +
	"run scripts/ensure-deps.sh chromium (as root it runs apt-get install -y --no-install-recommends chromium; " +
	"`make test` and .ci/run do it), or set CHROMIUM to a Chromium or Chrome binary")

// ExecPath returns the chromium the kit runs: $CHROMIUM when set, else
// /usr/bin/chromium, else chromium from PATH.
func ExecPath() (string, error) {
	if env := os.Getenv("CHROMIUM"); env != "" {
		path, err := exec.LookPath(env)
		if err != nil {
			return "", fmt.Errorf("CHROMIUM=%s: %w: %w", env, err, ErrNotInstalled)
		}
		return path, nil
	}
	if info, err := os.Stat(debianPath); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
		return debianPath, nil
	}
	path, err := exec.LookPath("chromium")
	if err != nil {
		return "", fmt.Errorf("%w (looked for %s and chromium in PATH)", ErrNotInstalled, debianPath)
	}
	return path, nil
}

// Option changes how Start and NewContext set up the browser.
type Option func(*config)

type config struct {
	width, height int
	mobile        bool
	timeout       time.Duration
}

// Phone makes the window a phone's, PhoneWidth x PhoneHeight, with mobile
// and touch emulation. As on a real phone, a page lays out PhoneWidth wide
// only if it has <meta name="viewport" content="width=device-width">;
// without it the page gets a 980px layout, zoomed out.
func Phone() Option {
	return func(c *config) {
		c.width, c.height, c.mobile = PhoneWidth, PhoneHeight, true
	}
}

// Size sets the window to width x height CSS pixels.
func Size(width, height int) Option {
	return func(c *config) { c.width, c.height = width, height }
}

// Timeout bounds each helper of Browser (default 20s).
func Timeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// NewContext starts a headless chromium and opens its first tab. It returns
// the tab's chromedp context, for chromedp.Run and chromedp.Do, and a cancel
// func that kills every chromium process and removes the temporary profile.
// cancel is also registered with tb.Cleanup and can be called more than once.
// NewContext fails tb if chromium is missing or does not start.
func NewContext(tb testing.TB, opts ...Option) (context.Context, context.CancelFunc) {
	tb.Helper()
	cfg := newConfig(opts)
	path, err := ExecPath()
	if err != nil {
		tb.Fatalf("browser: %v", err)
	}
	out := &lockedBuffer{}
	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.WindowSize(cfg.width, cfg.height),
		chromedp.CombinedOutput(out),
	)
	if os.Geteuid() == 0 {
		allocOpts = append(allocOpts, chromedp.NoSandbox) // chromium refuses to run its sandbox as root
	}
	// No UserDataDir option: chromedp then makes a fresh temporary profile,
	// and on cancel it kills every process started with that profile
	// (renderers and helpers too) before it removes the directory.
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), allocOpts...)
	tabCtx, tabCancel := chromedp.NewContext(allocCtx)
	var once sync.Once
	cancel := func() {
		once.Do(func() {
			tabCancel()   // waits for the browser process to exit
			allocCancel() // waits for the profile to be removed
		})
	}
	tb.Cleanup(cancel)

	// The first run starts chromium and must not carry a deadline (it would
	// bound the browser's life); a timer kills a start that hangs instead.
	watchdog := time.AfterFunc(startTimeout, allocCancel)
	err = chromedp.Do(tabCtx, emulate(cfg))
	stopped := watchdog.Stop()
	if err != nil {
		cancel()
		msg := fmt.Sprintf("browser: starting %s: %v", path, err)
		if !stopped {
			msg += fmt.Sprintf(" (no tab after %v)", startTimeout)
		}
		if o := bytes.TrimSpace(out.Bytes()); len(o) > 0 {
			msg += "\nchromium said:\n" + string(o)
		}
		tb.Fatal(msg)
	}
	return tabCtx, cancel
}

// emulate sets the viewport to the configured size, so that it is exact
// whatever the window decorations of the headless mode.
func emulate(cfg config) chromedp.Action[chromedp.Void] {
	var opts []chromedp.EmulateViewportOption
	if cfg.mobile {
		opts = append(opts, chromedp.EmulatePortrait, chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	return chromedp.EmulateViewport(int64(cfg.width), int64(cfg.height), opts...)
}

func newConfig(opts []Option) config {
	cfg := config{width: DesktopWidth, height: DesktopHeight, timeout: defaultTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// lockedBuffer is chromium's output, written by chromedp's goroutine and
// read by the one that reports a failed start.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 64<<10 {
		return len(p), nil // enough to explain a failed start
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
