package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"
)

// Browser is one headless chromium tab for one test. Its helpers fail the
// test (tb.Fatalf) on error, and each is bounded by the Timeout option.
// They must be called from the test's goroutine.
type Browser struct {
	tb      testing.TB
	ctx     context.Context
	cancel  context.CancelFunc
	timeout time.Duration

	mu       sync.Mutex
	problems []string
}

// Start runs a headless chromium for one test (see NewContext) and records
// the page's console errors, uncaught exceptions and browser-reported
// errors (CSP violations, failed loads) for Problems.
func Start(tb testing.TB, opts ...Option) *Browser {
	tb.Helper()
	ctx, cancel := NewContext(tb, opts...)
	b := &Browser{tb: tb, ctx: ctx, cancel: cancel, timeout: newConfig(opts).timeout}
	// The listener runs on chromedp's reading goroutine before the reply to
	// any later command is delivered, so a message the page wrote before a
	// helper returned is in Problems when the test looks.
	if err := chromedp.Listen(ctx, b.record); err != nil {
		cancel()
		tb.Fatalf("browser: listening to the console: %v", err)
	}
	return b
}

// Context returns the tab's chromedp context, for actions the helpers lack.
func (b *Browser) Context() context.Context { return b.ctx }

// Close kills chromium now (t.Cleanup also does it).
func (b *Browser) Close() { b.cancel() }

// Navigate loads url and waits for its load event.
func (b *Browser) Navigate(url string) {
	b.tb.Helper()
	b.do("navigate to "+url, chromedp.Navigate(url))
}

// Fill types value into the form field named name (after clearing it), as
// a user would: key events, so input and change handlers run.
func (b *Browser) Fill(name, value string) {
	b.tb.Helper()
	sel := chromedp.CSS(`[name="` + cssEscape(name) + `"]`)
	b.do("fill "+string(sel), chromedp.Clear(sel), chromedp.SendKeys(sel, value))
}

// Click clicks the first element matching the CSS selector (waiting for it
// to be visible) and returns without waiting for what the click causes.
func (b *Browser) Click(selector string) {
	b.tb.Helper()
	b.do("click "+selector, chromedp.Click(chromedp.CSS(selector)))
}

// Submit clicks the first element matching the CSS selector, a submit
// button or link, and waits for the next page's load event.
func (b *Browser) Submit(selector string) {
	b.tb.Helper()
	b.do("submit with "+selector,
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(selector)))(ctx, t)
			return err
		}))
}

// WaitVisible waits for an element matching the CSS selector to be visible.
func (b *Browser) WaitVisible(selector string) {
	b.tb.Helper()
	b.do("wait for "+selector, chromedp.WaitVisible(chromedp.CSS(selector)))
}

// Text returns the visible text (innerText) of the first element matching
// the CSS selector, waiting for it to exist.
func (b *Browser) Text(selector string) string {
	b.tb.Helper()
	return run(b, "read the text of "+selector, chromedp.Text(chromedp.CSS(selector)))
}

// Location returns the tab's current URL.
func (b *Browser) Location() string {
	b.tb.Helper()
	return run(b, "read the location", chromedp.Location())
}

// Cookies returns every cookie the browser holds, for every site (its
// profile is the test's own, so these are the cookies the test's pages set).
func (b *Browser) Cookies() []*network.Cookie {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	res, err := chromedp.CallBrowser(ctx, storage.GetCookies, storage.GetCookiesParams{})
	if err != nil {
		b.tb.Fatalf("browser: reading the cookies: %v", err)
	}
	return res.Cookies
}

// Screenshot writes a PNG of the whole page (beyond the viewport) to path,
// making its directory if needed.
func (b *Browser) Screenshot(path string) {
	b.tb.Helper()
	png := run(b, "take a screenshot", chromedp.FullScreenshot(100)) // 100: PNG
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.tb.Fatalf("browser: screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.tb.Fatalf("browser: screenshot: %v", err)
	}
}

// Eval runs a JavaScript expression in the page and decodes its value
// into T (awaiting it when it is a promise).
func Eval[T any](b *Browser, expression string) T {
	b.tb.Helper()
	return run(b, "evaluate "+expression, chromedp.Evaluate[T](expression, chromedp.EvalAwaitPromise))
}

// Problems returns what the page reported so far, oldest first: console.error
// calls, uncaught exceptions and rejections, and errors of the browser's own
// log (CSP violations, failed loads other than /favicon.ico, which the
// browser asks for by itself). A healthy page has none.
func (b *Browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// CSPViolations returns the Problems that are Content-Security-Policy
// violations.
func (b *Browser) CSPViolations() []string {
	var out []string
	for _, p := range b.Problems() {
		if strings.Contains(p, "Content Security Policy") {
			out = append(out, p)
		}
	}
	return out
}

// record is the console listener (see Start): fast, no commands.
func (b *Browser) record(ev any) {
	var line string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeAssert {
			return
		}
		args := make([]string, 0, len(ev.Args))
		for _, a := range ev.Args {
			args = append(args, remoteText(a))
		}
		line = "console." + string(ev.Type) + ": " + strings.Join(args, " ")
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		line = "exception: " + d.Text
		if d.Exception != nil {
			desc, _, _ := strings.Cut(remoteText(d.Exception), "\n") // no stack
			line += " " + desc
		}
	case *log.EventEntryAdded:
		e := ev.Entry
		if e == nil || e.Level != log.EntryLevelError || strings.HasSuffix(e.URL, "/favicon.ico") {
			return // the browser asks for a favicon by itself: not the page's doing
		}
		line = string(e.Source) + ": " + e.Text
		if e.URL != "" {
			line += " (" + e.URL + ")"
		}
	default:
		return
	}
	b.mu.Lock()
	b.problems = append(b.problems, line)
	b.mu.Unlock()
}

// remoteText is how the console shows a value: a string as it is, else
// its JSON or its description.
func remoteText(o *runtime.RemoteObject) string {
	if len(o.Value) > 0 {
		var s string
		if json.Unmarshal([]byte(o.Value), &s) == nil {
			return s
		}
		return string(o.Value)
	}
	if o.Description != "" {
		return o.Description
	}
	return string(o.UnserializableValue)
}

// do runs steps under the helper timeout and fails the test on error.
func (b *Browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.tb.Helper()
	run(b, what, chromedp.Steps(steps...))
}

// run runs one action under the helper timeout and fails the test on error.
func run[T any](b *Browser, what string, a chromedp.Action[T]) T {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.tb.Fatalf("browser: %s: %v", what, fmt.Errorf("%w (page problems: %q)", err, b.Problems()))
	}
	return v
}

// cssEscape escapes s for a double-quoted CSS attribute value.
func cssEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\a `).Replace(s)
}
