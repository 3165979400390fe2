// Package dashboard is the customers' web dashboard: server-rendered pages
// to sign up and in, see the balance and spend, mint and revoke API keys,
// read and download usage, and manage the account and its sessions. Its
// workflows go through package accounting, its reads through usagelog;
// sessions and sign-in limits live in Redis.
package dashboard

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/text/language"

	"github.com/cnaitoken/caddy-aitoken/accounting"
	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// Sign-up modes.
const (
	SignupOpen   = "open"
	SignupInvite = "invite"
	SignupClosed = "closed"
)

// Config is how a dashboard behaves.
type Config struct {
	// Prefix is the path the dashboard is served under, such as
	// "/dashboard"; "" for a site of its own.
	Prefix string
	// Signup is SignupOpen, SignupInvite or SignupClosed. In invite mode
	// only a user an admin made (with that email, no password yet) can
	// sign up, and only through a link mailed to that email, so SMTP is
	// needed; without it the mode is closed.
	Signup string
	// SessionIdle ends a session unused this long.
	SessionIdle time.Duration
	// SessionLifetime ends a session this long after sign-in.
	SessionLifetime time.Duration
	// PrivacyPolicyFile is an HTML fragment shown at /privacy; read on
	// each view.
	PrivacyPolicyFile string
	// Currency is the balances' currency code.
	Currency string
	// Topups starts top-ups from the billing page; nil when the gateway
	// takes no card payments.
	Topups *Topups
	// SMTP, when set, mails the links that verify emails, reset
	// passwords and let invited users claim their accounts.
	SMTP *SMTP
	// BaseURL is the dashboard's absolute address in mailed links, such
	// as "https://example.com/dashboard"; "" takes the request's scheme
	// and host.
	BaseURL string
	// ClientIP returns the client's address (behind trusted proxies), or
	// "" for the connection's.
	ClientIP func(*http.Request) string
}

// Backend is the state the dashboard reads and changes. It is opened
// lazily, at the first request, by the glue.
type Backend struct {
	Store    *usagelog.Store
	Books    *accounting.Books
	Accounts *billing.Accounts
	Redis    redis.UniversalClient
}

// Dashboard serves the pages. Build it with New; it is safe for
// concurrent use.
type Dashboard struct {
	cfg     Config
	backend func() (Backend, error)
	log     *zap.Logger
	pages   map[string]*template.Template
	handler http.Handler
	mailWG  sync.WaitGroup // messages being sent
}

// Wait waits for the messages being sent.
func (d *Dashboard) Wait() { d.mailWG.Wait() }

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New parses the templates and builds the routes; it touches no state.
// backend is called at each request for the ledger and Redis.
func New(cfg Config, backend func() (Backend, error), log *zap.Logger) (*Dashboard, error) {
	if log == nil {
		log = zap.NewNop()
	}
	cfg.Prefix = strings.TrimRight(cfg.Prefix, "/")
	if cfg.Signup == "" {
		cfg.Signup = SignupOpen
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = 2 * time.Hour
	}
	if cfg.SessionLifetime <= 0 {
		cfg.SessionLifetime = 7 * 24 * time.Hour
	}
	d := &Dashboard{cfg: cfg, backend: backend, log: log, pages: map[string]*template.Template{}}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		page := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if page == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, err
		}
		d.pages[page] = t
	}
	d.handler = d.routes()
	return d, nil
}

// ServeHTTP serves a dashboard page, under the security headers every
// page carries.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// form-action also governs where a form post may be redirected: the
	// top-up answers 303 to Stripe Checkout, which the browser must reach.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self' https://checkout.stripe.com; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	d.handler.ServeHTTP(w, r)
}

// request is what a page handler gets: the backend, the session (nil when
// signed out) and the language.
type request struct {
	*http.Request
	b    Backend
	s    *session
	lang language.Tag
	t    func(string) string
}

// handle wraps a page: it opens the backend, reads the session, picks the
// language and, when auth is set, sends signed-out visitors to sign in.
func (d *Dashboard) handle(auth bool, fn func(w http.ResponseWriter, rq *request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := d.backend()
		if err != nil {
			d.log.Error("dashboard: state not ready", zap.Error(err))
			http.Error(w, "service unavailable", http.StatusServiceUnavailable)
			return
		}
		s, err := d.loadSession(r.Context(), r, b.Redis)
		if err != nil {
			d.log.Error("dashboard: reading the session", zap.Error(err))
			http.Error(w, "service unavailable", http.StatusServiceUnavailable)
			return
		}
		chosen := ""
		if s != nil {
			chosen = s.Lang
		}
		lang := pickLanguage(r, chosen)
		if s != nil && r.URL.Query().Get("lang") != "" && langCodes[lang] != s.Lang {
			s.Lang = langCodes[lang]
			b.Redis.HSet(r.Context(), sessionKey(s.hash), "lang", s.Lang)
		}
		rq := &request{Request: r, b: b, s: s, lang: lang, t: translator(lang)}
		if auth && s == nil {
			http.Redirect(w, r, d.cfg.Prefix+"/login", http.StatusSeeOther)
			return
		}
		fn(w, rq)
	}
}

// routes maps the pages.
func (d *Dashboard) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /signup", d.handle(false, d.signupPage))
	mux.HandleFunc("POST /signup", d.handle(false, d.signup))
	mux.HandleFunc("GET /login", d.handle(false, d.loginPage))
	mux.HandleFunc("POST /login", d.handle(false, d.login))
	mux.HandleFunc("POST /logout", d.handle(false, d.logout))
	mux.HandleFunc("GET /privacy", d.handle(false, d.privacy))
	mux.HandleFunc("GET /{$}", d.handle(true, d.overview))
	mux.HandleFunc("GET /keys", d.handle(true, d.keysPage))
	mux.HandleFunc("POST /keys", d.handle(true, d.createKey))
	mux.HandleFunc("POST /keys/{id}/revoke", d.handle(true, d.revokeKey))
	mux.HandleFunc("GET /usage", d.handle(true, d.usage))
	mux.HandleFunc("GET /billing", d.handle(true, d.billingPage))
	mux.HandleFunc("POST /billing/topup", d.handle(true, d.topup))
	mux.HandleFunc("POST /billing/redeem", d.handle(true, d.redeem))
	mux.HandleFunc("GET /account", d.handle(true, d.accountPage))
	mux.HandleFunc("POST /account/name", d.handle(true, d.setName))
	mux.HandleFunc("POST /account/password", d.handle(true, d.setPassword))
	mux.HandleFunc("POST /account/ip-logging", d.handle(true, d.setIPLogging))
	mux.HandleFunc("GET /account/export", d.handle(true, d.export))
	mux.HandleFunc("POST /account/delete", d.handle(true, d.deleteAccount))
	mux.HandleFunc("POST /account/email", d.handle(true, d.changeEmail))
	if d.cfg.SMTP != nil {
		mux.HandleFunc("GET /forgot", d.handle(false, d.forgotPage))
		mux.HandleFunc("POST /forgot", d.handle(false, d.forgot))
		mux.HandleFunc("GET /reset", d.handle(false, d.linkPage(linkReset)))
		mux.HandleFunc("POST /reset", d.handle(false, d.reset))
		mux.HandleFunc("GET /verify", d.handle(false, d.linkPage(linkVerify)))
		mux.HandleFunc("POST /verify", d.handle(false, d.verify))
		mux.HandleFunc("POST /verify/resend", d.handle(true, d.resendVerify))
		mux.HandleFunc("GET /claim", d.handle(false, d.linkPage(linkClaim)))
		mux.HandleFunc("POST /claim", d.handle(false, d.claim))
	}
	mux.HandleFunc("GET /sessions", d.handle(true, d.sessionsPage))
	mux.HandleFunc("POST /sessions/{id}/end", d.handle(true, d.endSessionPage))
	var h http.Handler = http.NewCrossOriginProtection().Handler(mux)
	if d.cfg.Prefix != "" {
		h = http.StripPrefix(d.cfg.Prefix, h)
	}
	return h
}

// view is what every template gets.
type view struct {
	T        func(string) string
	Lang     string
	Prefix   string
	Page     string
	SignedIn bool
	Flash    string
	Error    string
	Data     any
}

// render writes page with data, in rq's language.
func (d *Dashboard) render(w http.ResponseWriter, rq *request, status int, page string, v view) {
	t := d.pages[page]
	v.T, v.Lang, v.Prefix, v.Page, v.SignedIn = rq.t, langCodes[rq.lang], d.cfg.Prefix, page, rq.s != nil
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := t.Execute(w, v); err != nil {
		d.log.Error("dashboard: rendering", zap.String("page", page), zap.Error(err))
	}
}

// fail answers an unexpected error with a generic page, logging it.
func (d *Dashboard) fail(w http.ResponseWriter, rq *request, what string, err error) {
	user := ""
	if rq.s != nil {
		user = rq.s.User
	}
	var re *accounting.RedisError
	if errors.As(err, &re) || errors.Is(err, context.DeadlineExceeded) {
		d.log.Error("dashboard: redis", zap.String("while", what), zap.String("user", user), zap.Error(err))
	} else {
		d.log.Error("dashboard", zap.String("while", what), zap.String("user", user), zap.Error(err))
	}
	d.render(w, rq, http.StatusServiceUnavailable, "error", view{Error: rq.t("error.unavailable")})
}

// notFound answers an ID that is not the customer's as if it did not exist.
func (d *Dashboard) notFound(w http.ResponseWriter, rq *request) {
	d.render(w, rq, http.StatusNotFound, "error", view{Error: rq.t("error.notfound")})
}

// redirect sends the browser to a dashboard page after a form post.
func (d *Dashboard) redirect(w http.ResponseWriter, r *http.Request, page string) {
	http.Redirect(w, r, d.cfg.Prefix+page, http.StatusSeeOther)
}

// secureEnough refuses sign-in and sign-up over plain HTTP anywhere but on
// a loopback address, where the cookie could travel in clear text.
func secureEnough(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
