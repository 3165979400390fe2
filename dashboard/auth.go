package dashboard

import (
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/accounting"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// authForm is what the sign-in and sign-up pages show back.
type authForm struct {
	Email, Name string
	Open        bool // sign-up is open
	Invite      bool // sign-up mails invited users a link
	Forgot      bool // a reset link can be mailed
}

// authForm is the empty form of the sign-in and sign-up pages.
func (d *Dashboard) authForm() authForm {
	return authForm{Open: d.cfg.Signup == SignupOpen, Invite: d.cfg.Signup == SignupInvite && d.cfg.SMTP != nil,
		Forgot: d.cfg.SMTP != nil}
}

func (d *Dashboard) signupPage(w http.ResponseWriter, rq *request) {
	d.render(w, rq, http.StatusOK, "signup", view{Data: d.authForm()})
}

func (d *Dashboard) loginPage(w http.ResponseWriter, rq *request) {
	if rq.s != nil {
		d.redirect(w, rq.Request, "/")
		return
	}
	v := view{Data: d.authForm()}
	if rq.URL.Query().Get("sent") == "1" {
		v.Flash = rq.t("signup.sent")
	}
	d.render(w, rq, http.StatusOK, "login", v)
}

// validEmail is a light check: the mailbox proves the rest.
func validEmail(s string) bool {
	at := strings.LastIndexByte(s, '@')
	return len(s) <= 254 && at > 0 && at < len(s)-1 && !strings.ContainsAny(s, " \t\r\n<>\"") && utf8.ValidString(s)
}

func (d *Dashboard) signup(w http.ResponseWriter, rq *request) {
	r := rq.Request
	if d.cfg.Signup == SignupInvite && d.cfg.SMTP != nil {
		d.invite(w, rq)
		return
	}
	form := d.authForm()
	form.Email, form.Name = strings.TrimSpace(r.PostFormValue("email")), strings.TrimSpace(r.PostFormValue("name"))
	again := func(msg string) {
		d.render(w, rq, http.StatusBadRequest, "signup", view{Error: rq.t(msg), Data: form})
	}
	password := r.PostFormValue("password")
	switch {
	case d.cfg.Signup != SignupOpen:
		d.render(w, rq, http.StatusForbidden, "signup", view{Error: rq.t("signup.closed"), Data: form})
		return
	case !secureEnough(r):
		again("error.https")
		return
	case !validEmail(form.Email):
		again("signup.bad_email")
		return
	case len(password) < minPassword || len(password) > maxPassword:
		again("signup.bad_password")
		return
	case len(form.Name) > 200:
		again("signup.bad_name")
		return
	case r.PostFormValue("adult") != "on":
		again("signup.adult_required")
		return
	}
	hash, err := hashPassword(password)
	if err != nil {
		d.fail(w, rq, "hashing a password", err)
		return
	}
	u, err := rq.b.Books.CreateUser(r.Context(), usagelog.User{Email: form.Email, Name: form.Name, PasswordHash: hash})
	var re *accounting.RedisError
	switch {
	case errors.Is(err, usagelog.ErrExists) && d.cfg.SMTP != nil:
		// The mailbox hears of it; the page answers as for a new account,
		// so it tells nobody which emails have one.
		if l, lerr := rq.b.Store.LoginByEmail(r.Context(), form.Email); lerr == nil {
			if ok, _ := d.allowMail(rq, l.User.ID); ok {
				d.sendLink(rq, form.Email, "exists", d.baseURL(r)+"/login")
			}
		}
		d.redirect(w, r, "/login?sent=1")
		return
	case errors.Is(err, usagelog.ErrExists):
		// Without a mailbox to write to, the page cannot hide that the
		// email has an account; it says no more than that.
		again("signup.taken")
		return
	case errors.As(err, &re):
		// The account opens with the first credit or key, or reconcile.
		d.log.Warn("dashboard: sign-up stored, redis account not opened", zap.String("user", u.ID), zap.Error(err))
	case err != nil:
		d.fail(w, rq, "signing up", err)
		return
	}
	d.log.Info("dashboard: sign-up", zap.String("user", u.ID))
	if d.cfg.SMTP != nil {
		// Signed in only after this: a known email gets the same answer.
		if err := d.sendVerify(rq, u.ID, u.Email); err != nil {
			d.log.Error("dashboard: a verification link not sent", zap.String("user", u.ID), zap.Error(err))
		}
		d.redirect(w, r, "/login?sent=1")
		return
	}
	if err := d.newSession(r.Context(), w, r, rq.b.Redis, u.ID, langCodes[rq.lang]); err != nil {
		d.fail(w, rq, "starting a session", err)
		return
	}
	d.redirect(w, r, "/")
}

func (d *Dashboard) login(w http.ResponseWriter, rq *request) {
	r := rq.Request
	form := d.authForm()
	form.Email = strings.TrimSpace(r.PostFormValue("email"))
	password := r.PostFormValue("password")
	if !secureEnough(r) {
		d.render(w, rq, http.StatusBadRequest, "login", view{Error: rq.t("error.https"), Data: form})
		return
	}
	if err := d.allowSignIn(r.Context(), rq.b.Redis, r, form.Email); err != nil {
		if errors.Is(err, errRateLimited) {
			w.Header().Set("Retry-After", "900")
			d.render(w, rq, http.StatusTooManyRequests, "login", view{Error: rq.t("login.rate_limited"), Data: form})
			return
		}
		d.fail(w, rq, "counting sign-in attempts", err)
		return
	}
	l, err := rq.b.Store.LoginByEmail(r.Context(), form.Email)
	if err != nil && !errors.Is(err, usagelog.ErrNotFound) {
		d.fail(w, rq, "reading a login", err)
		return
	}
	// An unknown email costs the same hashing as a wrong password, and
	// gets the same answer.
	if !checkPassword(l.PasswordHash, password) || len(password) > maxPassword {
		d.render(w, rq, http.StatusUnauthorized, "login", view{Error: rq.t("login.failed"), Data: form})
		return
	}
	if err := d.newSession(r.Context(), w, r, rq.b.Redis, l.User.ID, langCodes[rq.lang]); err != nil {
		d.fail(w, rq, "starting a session", err)
		return
	}
	d.redirect(w, r, "/")
}

func (d *Dashboard) logout(w http.ResponseWriter, rq *request) {
	if rq.s != nil {
		d.endSession(rq.Context(), rq.b.Redis, rq.s)
	}
	http.SetCookie(w, d.cookie(rq.Request, "", -1))
	d.redirect(w, rq.Request, "/login")
}
