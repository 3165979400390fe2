package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/dashboard"
)

func init() {
	caddy.RegisterModule(Dashboard{})
}

// Dashboard serves the customers' web dashboard (package dashboard):
// sign-up and sign-in, balance and spend, API keys, usage, the account and
// its sessions. It needs the ledger: the aitoken app's database.
type Dashboard struct {
	// Prefix is the path the dashboard is mounted under; pages and links
	// live below it. Default: "/dashboard". "/" for a site of its own.
	Prefix string `json:"prefix,omitempty"`
	// Signup is who may create an account: "open" (anyone), "invite" (a
	// user an admin made with an email claims it by a link mailed there;
	// needs smtp, and behaves as closed without it) or "closed" (accounts
	// come from the admin API alone). Default: "open".
	Signup string `json:"signup,omitempty"`
	// SessionIdle ends a session not used for this long. Default: 2h.
	SessionIdle caddy.Duration `json:"session_idle,omitempty"`
	// SessionLifetime ends a session this long after sign-in, used or
	// not. Default: 7 days.
	SessionLifetime caddy.Duration `json:"session_lifetime,omitempty"`
	// PrivacyPolicyFile is an HTML fragment served at /privacy, read at
	// each view (never at provision time). Default: a short notice.
	PrivacyPolicyFile string `json:"privacy_policy_file,omitempty"`
	// SMTP is the mail server of the emailed links (email verification,
	// password reset, change of email, invitations). Without it, none is
	// sent: emails are not verified and passwords are reset by an admin.
	SMTP *DashboardSMTP `json:"smtp,omitempty"`
	// BaseURL is the dashboard's absolute address in mailed links, e.g.
	// "https://example.com/dashboard". Default: the request's scheme and
	// host, which the site's address bounds; set it on a site that
	// answers any host.
	BaseURL string `json:"base_url,omitempty"`

	app *App
	d   *dashboard.Dashboard
}

// DashboardSMTP is the dashboard's mail server.
type DashboardSMTP struct {
	// Host is the server's name or address. Required.
	Host string `json:"host,omitempty"`
	// Port is the server's port: 465 speaks TLS from the start, any other
	// uses STARTTLS when the server offers it. Default: 587.
	Port int `json:"port,omitempty"`
	// Username and Password authenticate, when set. Give the password as
	// an {env.*} or {file.*} placeholder: it is resolved at provision time.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// From is the sender, e.g. "Example <noreply@example.com>". Required.
	From string `json:"from,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Dashboard) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.aitoken_dashboard",
		New: func() caddy.Module { return new(Dashboard) },
	}
}

// Provision finds the aitoken app and builds the pages. It opens nothing:
// the ledger and Redis are reached at the first request.
func (h *Dashboard) Provision(ctx caddy.Context) error {
	appIface, err := ctx.AppIfConfigured("aitoken")
	if err != nil {
		return errors.New("aitoken_dashboard needs the aitoken global option: " + err.Error())
	}
	h.app = appIface.(*App)
	if h.Prefix == "" {
		h.Prefix = "/dashboard"
	}
	if h.SessionIdle == 0 {
		h.SessionIdle = caddy.Duration(2 * time.Hour)
	}
	if h.SessionLifetime == 0 {
		h.SessionLifetime = caddy.Duration(7 * 24 * time.Hour)
	}
	if h.Signup == "" {
		h.Signup = dashboard.SignupOpen
	}
	var smtp *dashboard.SMTP
	if c := h.SMTP; c != nil {
		repl := caddy.NewReplacer()
		smtp = &dashboard.SMTP{Host: repl.ReplaceKnown(c.Host, ""), Port: c.Port, From: c.From,
			Username: repl.ReplaceKnown(c.Username, "")}
		if smtp.Password, err = repl.ReplaceOrErr(c.Password, true, true); err != nil {
			return fmt.Errorf("aitoken_dashboard smtp password: %v", err)
		}
		if smtp.Port == 0 {
			smtp.Port = 587
		}
	}
	signup := h.Signup
	if signup == dashboard.SignupInvite && smtp == nil {
		signup = dashboard.SignupClosed
	}
	var topups *dashboard.Topups
	if sc := h.app.Stripe; sc != nil {
		if err := sc.provision(h.app.log); err != nil {
			return err
		}
		if sc.api != nil {
			topups = &dashboard.Topups{API: sc.api, Policy: sc.policy()}
		}
	}
	h.d, err = dashboard.New(dashboard.Config{
		Prefix: h.Prefix, Signup: signup, SessionIdle: time.Duration(h.SessionIdle),
		SessionLifetime: time.Duration(h.SessionLifetime), PrivacyPolicyFile: h.PrivacyPolicyFile,
		Currency: h.app.Currency, Topups: topups, SMTP: smtp, BaseURL: h.BaseURL,
		ClientIP: func(r *http.Request) string {
			if a := clientAddr(r); a.IsValid() {
				return a.String()
			}
			return ""
		},
	}, h.backend, ctx.Logger())
	return err
}

// Validate checks the options.
func (h *Dashboard) Validate() error {
	switch h.Signup {
	case dashboard.SignupOpen, dashboard.SignupInvite, dashboard.SignupClosed:
	default:
		return fmt.Errorf("aitoken_dashboard: signup %q: want open, invite or closed", h.Signup)
	}
	if h.app.Database == "" {
		return errors.New("aitoken_dashboard needs the ledger: set database in the aitoken global option")
	}
	if c := h.SMTP; c != nil && (c.Host == "" || c.From == "" || c.Port < 0 || c.Port > 65535) {
		return errors.New("aitoken_dashboard: smtp needs host and from, and a port from 1 to 65535")
	}
	if h.SessionIdle < 0 || h.SessionLifetime < 0 || h.SessionIdle > h.SessionLifetime {
		return errors.New("aitoken_dashboard: session_idle must be positive and at most session_lifetime")
	}
	return nil
}

// backend opens (once, shared) the ledger and Redis for a request.
func (h *Dashboard) backend() (dashboard.Backend, error) {
	if err := h.app.ready(); err != nil {
		return dashboard.Backend{}, err
	}
	if h.app.ledger == nil {
		return dashboard.Backend{}, errors.New("no ledger on this node")
	}
	return dashboard.Backend{Store: h.app.ledger.store, Books: h.app.books(), Accounts: h.app.accounts,
		Redis: h.app.accounts.Client()}, nil
}

// ServeHTTP serves the dashboard's pages.
func (h *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.app.inflight.begin()
	defer h.app.inflight.end()
	h.d.ServeHTTP(w, r)
	return nil
}

// Cleanup waits for the mails being sent.
func (h *Dashboard) Cleanup() error {
	if h.d != nil {
		h.d.Wait()
	}
	return nil
}

// Interface guards
var (
	_ caddy.CleanerUpper          = (*Dashboard)(nil)
	_ caddy.Provisioner           = (*Dashboard)(nil)
	_ caddy.Validator             = (*Dashboard)(nil)
	_ caddyhttp.MiddlewareHandler = (*Dashboard)(nil)
)
