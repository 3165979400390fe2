package dashboard

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// This file holds the flows that work through emailed links, when SMTP is
// configured: verifying an email, resetting a password, changing the email
// and claiming an invited account. Each link carries a single-use token
// kept in Redis only as its hash.

// Mail sends per account within signInWindow, beside the sign-in limits.
const mailsPerAccount = 5

// linkForm is what the pages of a link show back.
type linkForm struct {
	Token string
	Email string
	Done  bool
}

// allowMail counts a message to email (or the account) and refuses it
// over the limit; the refusal is silent where answers must not differ.
func (d *Dashboard) allowMail(rq *request, subject string) (bool, error) {
	n, err := rateScript.Run(rq.Context(), rq.b.Redis, []string{"ait:dash_rl:mail:" + hashToken(subject)[:32]},
		signInWindow.Milliseconds()).Int64()
	return n <= mailsPerAccount, err
}

// sendVerify mails a link that verifies email for user.
func (d *Dashboard) sendVerify(rq *request, user, email string) error {
	if ok, err := d.allowMail(rq, user); err != nil || !ok {
		return err
	}
	link, err := d.newLink(rq.Context(), rq.b.Redis, rq.Request, linkVerify, user, email)
	if err != nil {
		return err
	}
	d.sendLink(rq, email, linkVerify, link)
	return nil
}

// resendVerify sends the signed-in user a new verification link.
func (d *Dashboard) resendVerify(w http.ResponseWriter, rq *request) {
	l, err := rq.b.Store.GetLogin(rq.Context(), rq.s.User)
	if err == nil && l.EmailVerifiedAt == nil {
		err = d.sendVerify(rq, l.User.ID, l.User.Email)
	}
	if err != nil {
		d.fail(w, rq, "sending a verification link", err)
		return
	}
	d.renderKeys(w, rq, http.StatusOK, keysData{Sent: true}, "")
}

// linkPage shows the form a link leads to; the token is used only by the
// form's post, so a mail scanner that follows links spends nothing.
func (d *Dashboard) linkPage(kind string) func(http.ResponseWriter, *request) {
	return func(w http.ResponseWriter, rq *request) {
		token := rq.URL.Query().Get("token")
		_, email, err := peekLink(rq.Context(), rq.b.Redis, kind, token)
		switch {
		case errors.Is(err, errBadLink):
			d.render(w, rq, http.StatusNotFound, "error", view{Error: rq.t("link.bad")})
		case err != nil:
			d.fail(w, rq, "reading a link", err)
		default:
			d.render(w, rq, http.StatusOK, kind, view{Data: linkForm{Token: token, Email: email}})
		}
	}
}

// verify uses a verification link: the email it names becomes the
// account's, verified.
func (d *Dashboard) verify(w http.ResponseWriter, rq *request) {
	ctx := rq.Context()
	user, email, err := useLink(ctx, rq.b.Redis, linkVerify, rq.PostFormValue("token"))
	if err == nil {
		var l usagelog.Login
		if l, err = rq.b.Store.GetLogin(ctx, user); err == nil && !strings.EqualFold(l.User.Email, email) {
			err = rq.b.Store.SetEmail(ctx, user, email)
		}
		if err == nil {
			err = rq.b.Store.VerifyEmail(ctx, user, email, time.Now())
		}
	}
	switch {
	case errors.Is(err, errBadLink) || errors.Is(err, usagelog.ErrNotFound):
		d.render(w, rq, http.StatusNotFound, "error", view{Error: rq.t("link.bad")})
	case errors.Is(err, usagelog.ErrExists):
		d.render(w, rq, http.StatusConflict, "error", view{Error: rq.t("account.email_taken")})
	case err != nil:
		d.fail(w, rq, "verifying an email", err)
	default:
		d.log.Info("dashboard: email verified", zap.String("user", user))
		d.render(w, rq, http.StatusOK, "verify", view{Flash: rq.t("verify.done"), Data: linkForm{Done: true}})
	}
}

func (d *Dashboard) forgotPage(w http.ResponseWriter, rq *request) {
	d.render(w, rq, http.StatusOK, "forgot", view{Data: linkForm{}})
}

// forgot mails a reset link to a known email; every email gets the same
// answer, as fast.
func (d *Dashboard) forgot(w http.ResponseWriter, rq *request) {
	r := rq.Request
	email := strings.TrimSpace(r.PostFormValue("email"))
	answer := func() {
		d.render(w, rq, http.StatusOK, "forgot", view{Flash: rq.t("forgot.sent"), Data: linkForm{Done: true}})
	}
	if !validEmail(email) {
		d.render(w, rq, http.StatusBadRequest, "forgot", view{Error: rq.t("signup.bad_email"), Data: linkForm{Email: email}})
		return
	}
	if err := d.allowSignIn(r.Context(), rq.b.Redis, r, email); err != nil {
		if errors.Is(err, errRateLimited) {
			answer()
			return
		}
		d.fail(w, rq, "counting reset requests", err)
		return
	}
	l, err := rq.b.Store.LoginByEmail(r.Context(), email)
	if errors.Is(err, usagelog.ErrNotFound) {
		answer()
		return
	}
	if err == nil {
		var link string
		if link, err = d.newLink(r.Context(), rq.b.Redis, r, linkReset, l.User.ID, l.User.Email); err == nil {
			d.sendLink(rq, l.User.Email, linkReset, link)
		}
	}
	if err != nil {
		d.fail(w, rq, "starting a password reset", err)
		return
	}
	answer()
}

// reset uses a reset link: a new password, and every session ends.
func (d *Dashboard) reset(w http.ResponseWriter, rq *request) {
	ctx, token, password := rq.Context(), rq.PostFormValue("token"), rq.PostFormValue("password")
	if len(password) < minPassword || len(password) > maxPassword {
		d.render(w, rq, http.StatusBadRequest, "reset", view{Error: rq.t("signup.bad_password"), Data: linkForm{Token: token}})
		return
	}
	user, _, err := useLink(ctx, rq.b.Redis, linkReset, token)
	if err == nil {
		var hash string
		if hash, err = hashPassword(password); err == nil {
			err = rq.b.Store.SetPassword(ctx, user, hash)
		}
	}
	switch {
	case errors.Is(err, errBadLink) || errors.Is(err, usagelog.ErrNotFound):
		d.render(w, rq, http.StatusNotFound, "error", view{Error: rq.t("link.bad")})
		return
	case err != nil:
		d.fail(w, rq, "resetting a password", err)
		return
	}
	if err := rq.b.Accounts.EndDashboardSessions(ctx, user); err != nil {
		d.log.Error("dashboard: ending sessions after a reset", zap.String("user", user), zap.Error(err))
	}
	d.log.Info("dashboard: password reset", zap.String("user", user))
	http.SetCookie(w, d.cookie(rq.Request, "", -1))
	rq.s = nil
	d.render(w, rq, http.StatusOK, "login", view{Flash: rq.t("reset.done"), Data: d.authForm()})
}

// invite answers a sign-up in invite mode: a user an admin made with this
// email, and no password yet, is mailed a link to claim the account.
// Every email gets the same answer.
func (d *Dashboard) invite(w http.ResponseWriter, rq *request) {
	r := rq.Request
	form := d.authForm()
	form.Email = strings.TrimSpace(r.PostFormValue("email"))
	if !validEmail(form.Email) {
		d.render(w, rq, http.StatusBadRequest, "signup", view{Error: rq.t("signup.bad_email"), Data: form})
		return
	}
	answer := func() { d.render(w, rq, http.StatusOK, "signup", view{Flash: rq.t("invite.sent"), Data: form}) }
	ok, err := d.allowMail(rq, strings.ToLower(form.Email))
	if err != nil {
		d.fail(w, rq, "counting invitations", err)
		return
	}
	u, err := rq.b.Store.InvitedByEmail(r.Context(), form.Email)
	if errors.Is(err, usagelog.ErrNotFound) || err == nil && !ok {
		answer()
		return
	}
	if err == nil {
		var link string
		if link, err = d.newLink(r.Context(), rq.b.Redis, r, linkClaim, u.ID, u.Email); err == nil {
			d.sendLink(rq, u.Email, linkClaim, link)
		}
	}
	if err != nil {
		d.fail(w, rq, "inviting", err)
		return
	}
	answer()
}

// claim uses an invitation link: the invited user sets a password, the
// email counts as verified, and a session starts.
func (d *Dashboard) claim(w http.ResponseWriter, rq *request) {
	r := rq.Request
	token, password, name := r.PostFormValue("token"), r.PostFormValue("password"), strings.TrimSpace(r.PostFormValue("name"))
	again := func(msg string) {
		d.render(w, rq, http.StatusBadRequest, "claim", view{Error: rq.t(msg), Data: linkForm{Token: token}})
	}
	switch {
	case !secureEnough(r):
		again("error.https")
		return
	case len(password) < minPassword || len(password) > maxPassword:
		again("signup.bad_password")
		return
	case len(name) > 200:
		again("signup.bad_name")
		return
	case r.PostFormValue("adult") != "on":
		again("signup.adult_required")
		return
	}
	ctx := r.Context()
	user, email, err := useLink(ctx, rq.b.Redis, linkClaim, token)
	if err == nil {
		var hash string
		if hash, err = hashPassword(password); err == nil {
			err = rq.b.Store.ClaimInvite(ctx, user, email, hash, name, time.Now())
		}
	}
	switch {
	case errors.Is(err, errBadLink) || errors.Is(err, usagelog.ErrNotFound):
		d.render(w, rq, http.StatusNotFound, "error", view{Error: rq.t("link.bad")})
		return
	case errors.Is(err, usagelog.ErrExists):
		d.render(w, rq, http.StatusConflict, "error", view{Error: rq.t("signup.taken")})
		return
	case err != nil:
		d.fail(w, rq, "claiming an invitation", err)
		return
	}
	d.log.Info("dashboard: invitation claimed", zap.String("user", user))
	if err := d.newSession(ctx, w, r, rq.b.Redis, user, langCodes[rq.lang]); err != nil {
		d.fail(w, rq, "starting a session", err)
		return
	}
	d.redirect(w, r, "/")
}

// changeEmail mails a link to the new address; the email changes when it
// is used. Without SMTP it changes at once, unverified.
func (d *Dashboard) changeEmail(w http.ResponseWriter, rq *request) {
	ok, err := d.checkCurrent(rq)
	if err != nil {
		d.fail(w, rq, "reading the account", err)
		return
	}
	email := strings.TrimSpace(rq.PostFormValue("email"))
	switch {
	case !ok:
		d.renderAccount(w, rq, http.StatusBadRequest, "", "account.wrong_password")
		return
	case !validEmail(email):
		d.renderAccount(w, rq, http.StatusBadRequest, "", "signup.bad_email")
		return
	}
	if d.cfg.SMTP == nil {
		err := rq.b.Store.SetEmail(rq.Context(), rq.s.User, email)
		switch {
		case errors.Is(err, usagelog.ErrExists):
			d.renderAccount(w, rq, http.StatusConflict, "", "account.email_taken")
		case err != nil:
			d.fail(w, rq, "changing the email", err)
		default:
			d.renderAccount(w, rq, http.StatusOK, "account.saved", "")
		}
		return
	}
	if err := d.sendVerify(rq, rq.s.User, email); err != nil {
		d.fail(w, rq, "sending a verification link", err)
		return
	}
	d.renderAccount(w, rq, http.StatusOK, "account.email_sent", "")
}
