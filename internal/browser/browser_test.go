package browser

import (
	"bytes"
	"fmt"
	"html"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
)

// site is a tiny web app: a sign-in form that sets a session cookie, a
// page that writes to the console and throws, and one whose inline script
// its Content-Security-Policy blocks.
func site(t *testing.T) *httptest.Server {
	t.Helper()
	var mu sync.Mutex
	sessions := map[string]string{} // session id -> email
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'")
		fmt.Fprint(w, `<!doctype html><title>Sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/style.css">
<h1>Sign in</h1>
<form method="post" action="/login">
  <label>Email <input name="email" type="email"></label>
  <label>Password <input name="password" type="password"></label>
  <button type="submit">Sign in</button>
</form>
<div class="tall">tall, so the full-page screenshot is taller than the window</div>`)
	})
	mux.HandleFunc("GET /style.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css")
		fmt.Fprint(w, `.tall { height: 1500px }`)
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		if r.FormValue("password") != "s3cret" {
			http.Error(w, "bad password", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		sessions["sid-1"] = r.FormValue("email")
		mu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "sid-1", Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		http.Redirect(w, r, "/home", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /home", func(w http.ResponseWriter, r *http.Request) {
		var email string
		if c, err := r.Cookie("session"); err == nil {
			mu.Lock()
			email = sessions[c.Value]
			mu.Unlock()
		}
		if email == "" {
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		fmt.Fprintf(w, `<!doctype html><title>Home</title><h1 id="hello">Welcome, %s</h1>`, html.EscapeString(email))
	})
	mux.HandleFunc("GET /broken", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>Broken</title><p>broken</p>
<script>console.log("fine"); console.error("boom", 42); throw new Error("kaput");</script>`)
	})
	mux.HandleFunc("GET /csp", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "script-src 'none'")
		fmt.Fprint(w, `<!doctype html><title>CSP</title><p id="p">csp</p><script>document.title = "ran"</script>`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestSignInSessionCookieAndScreenshot(t *testing.T) {
	srv := site(t)
	b := Start(t)
	b.Navigate(srv.URL)
	if got := b.Text("h1"); got != "Sign in" {
		t.Fatalf("h1 = %q, want Sign in", got)
	}
	if c := b.Cookies(); len(c) != 0 {
		t.Fatalf("cookies before signing in: %v", c)
	}
	b.Fill("email", "ann@example.com")
	b.Fill("password", "s3cret")
	b.Submit(`button[type="submit"]`)

	if got := b.Text("#hello"); got != "Welcome, ann@example.com" {
		t.Fatalf("after sign-in: h1 = %q", got)
	}
	if got := b.Location(); got != srv.URL+"/home" {
		t.Errorf("location = %q, want %s/home", got, srv.URL)
	}
	cookies := b.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies = %d, want only the session cookie: %+v", len(cookies), cookies)
	}
	if c := cookies[0]; c.Name != "session" || c.Value != "sid-1" || !c.HTTPOnly || c.Path != "/" {
		t.Errorf("cookie = %+v, want session=sid-1, HttpOnly, Path=/", c)
	}

	b.Navigate(srv.URL) // the tall form page
	path := filepath.Join(t.TempDir(), "shots", "signin.png")
	b.Screenshot(path)
	w, h := pngSize(t, path)
	if w != DesktopWidth || h <= DesktopHeight {
		t.Errorf("screenshot is %dx%d, want %d wide and taller than %d (the full page)", w, h, DesktopWidth, DesktopHeight)
	}
	if p := b.Problems(); len(p) != 0 {
		t.Errorf("a healthy page reported problems: %q", p)
	}
}

func TestPhone(t *testing.T) {
	srv := site(t)
	b := Start(t, Phone())
	b.Navigate(srv.URL)
	if got := Eval[int](b, "window.innerWidth"); got != PhoneWidth {
		t.Errorf("innerWidth = %d, want %d", got, PhoneWidth)
	}
	if !Eval[bool](b, "matchMedia('(pointer: coarse)').matches") {
		t.Error("a phone should have a coarse (touch) pointer")
	}
	path := filepath.Join(t.TempDir(), "phone.png")
	b.Screenshot(path)
	if w, _ := pngSize(t, path); w != PhoneWidth {
		t.Errorf("phone screenshot is %d wide, want %d", w, PhoneWidth)
	}
}

func TestDesktopViewport(t *testing.T) {
	srv := site(t)
	b := Start(t)
	b.Navigate(srv.URL)
	got := Eval[[]int](b, "[window.innerWidth, window.innerHeight]")
	if len(got) != 2 || got[0] != DesktopWidth || got[1] != DesktopHeight {
		t.Errorf("viewport = %v, want %dx%d", got, DesktopWidth, DesktopHeight)
	}
}

func TestProblemsAndCSPViolations(t *testing.T) {
	srv := site(t)
	b := Start(t)
	b.Navigate(srv.URL + "/broken")
	b.WaitVisible("p")
	p := strings.Join(b.Problems(), "\n")
	for _, want := range []string{"console.error: boom 42", "kaput"} {
		if !strings.Contains(p, want) {
			t.Errorf("problems lack %q:\n%s", want, p)
		}
	}
	if strings.Contains(p, "fine") {
		t.Errorf("console.log is no problem, but it is in:\n%s", p)
	}
	if v := b.CSPViolations(); len(v) != 0 {
		t.Errorf("CSP violations on a page without a policy: %q", v)
	}

	b.Navigate(srv.URL + "/csp")
	b.WaitVisible("#p")
	if title := Eval[string](b, "document.title"); title != "CSP" {
		t.Errorf("title = %q: the inline script ran despite script-src 'none'", title)
	}
	v := b.CSPViolations()
	if len(v) == 0 {
		t.Error("no CSP violation reported for the blocked inline script")
	}
	for _, p := range v {
		if !strings.Contains(p, "script-src") {
			t.Errorf("CSP violation %q is not the blocked inline script", p)
		}
	}
}

// TestCloseKillsChromium: after Close no process of the browser's profile
// is left, and the temporary profile is gone.
func TestCloseKillsChromium(t *testing.T) {
	srv := site(t)
	b := Start(t)
	b.Navigate(srv.URL)
	proc := chromedp.FromContext(b.Context()).Browser.Process()
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", proc.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var profile string
	for arg := range bytes.SplitSeq(cmdline, []byte{0}) {
		if dir, ok := strings.CutPrefix(string(arg), "--user-data-dir="); ok {
			profile = dir
		}
	}
	if profile == "" {
		t.Fatalf("no --user-data-dir in %q", cmdline)
	}
	if n := len(processesUsing(t, profile)); n < 2 {
		t.Fatalf("%d processes use the profile; want chromium and its helpers", n)
	}
	b.Close()
	b.Close() // idempotent; t.Cleanup calls it once more
	if left := processesUsing(t, profile); len(left) > 0 {
		t.Errorf("processes left after Close: %v", left)
	}
	if _, err := os.Stat(profile); !os.IsNotExist(err) {
		t.Errorf("profile %s still there after Close (stat: %v)", profile, err)
	}
}

// TestMissingChromiumFails: no chromium fails the test, saying how to
// install it.
func TestMissingChromiumFails(t *testing.T) {
	t.Setenv("CHROMIUM", filepath.Join(t.TempDir(), "no-such-chromium"))
	ft := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() { // Fatal ends this goroutine, as it would a test's
		defer close(done)
		NewContext(ft)
		ft.msg = "NewContext returned"
	}()
	<-done
	for _, want := range []string{"chromium not found", "scripts/ensure-deps.sh chromium", "apt-get install", "CHROMIUM"} {
		if !strings.Contains(ft.msg, want) {
			t.Errorf("failure message lacks %q: %s", want, ft.msg)
		}
	}
}

func TestExecPathFindsDebianChromium(t *testing.T) {
	t.Setenv("CHROMIUM", "")
	path, err := ExecPath()
	if err != nil {
		t.Fatal(err)
	}
	if path != debianPath {
		t.Logf("chromium at %s, not %s", path, debianPath)
	}
}

// fatalTB records the failure of the code under test and ends its goroutine.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	runtime.Goexit()
}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// pngSize decodes the PNG at path and returns its size.
func pngSize(t *testing.T, path string) (int, int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s is no valid PNG: %v", path, err)
	}
	return img.Bounds().Dx(), img.Bounds().Dy()
}

// processesUsing lists the processes whose command line names the profile.
func processesUsing(t *testing.T, profile string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("--user-data-dir=" + profile)
	var out []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, want) {
			continue
		}
		// A zombie keeps no command line, so one read is a live process.
		out = append(out, e.Name()+" "+string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	}
	return out
}
