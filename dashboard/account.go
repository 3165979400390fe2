package dashboard

import (
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

type accountData struct {
	Login usagelog.Login
	Mail  bool // emails are verified by mailed links
}

func (d *Dashboard) accountPage(w http.ResponseWriter, rq *request) {
	d.renderAccount(w, rq, http.StatusOK, "", "")
}

func (d *Dashboard) renderAccount(w http.ResponseWriter, rq *request, status int, flash, errKey string) {
	l, err := rq.b.Store.GetLogin(rq.Context(), rq.s.User)
	if err != nil {
		d.fail(w, rq, "reading the account", err)
		return
	}
	v := view{Data: accountData{Login: l, Mail: d.cfg.SMTP != nil}}
	if flash != "" {
		v.Flash = rq.t(flash)
	}
	if errKey != "" {
		v.Error = rq.t(errKey)
	}
	d.render(w, rq, status, "account", v)
}

func (d *Dashboard) setName(w http.ResponseWriter, rq *request) {
	name := strings.TrimSpace(rq.PostFormValue("name"))
	if len(name) > 200 {
		d.renderAccount(w, rq, http.StatusBadRequest, "", "signup.bad_name")
		return
	}
	if err := rq.b.Store.SetName(rq.Context(), rq.s.User, name); err != nil {
		d.fail(w, rq, "changing the name", err)
		return
	}
	d.renderAccount(w, rq, http.StatusOK, "account.saved", "")
}

// checkCurrent reports whether the form's current password is the
// user's.
func (d *Dashboard) checkCurrent(rq *request) (bool, error) {
	l, err := rq.b.Store.GetLogin(rq.Context(), rq.s.User)
	if err != nil {
		return false, err
	}
	return checkPassword(l.PasswordHash, rq.PostFormValue("current_password")), nil
}

func (d *Dashboard) setPassword(w http.ResponseWriter, rq *request) {
	ok, err := d.checkCurrent(rq)
	if err != nil {
		d.fail(w, rq, "reading the account", err)
		return
	}
	password := rq.PostFormValue("password")
	switch {
	case !ok:
		d.renderAccount(w, rq, http.StatusBadRequest, "", "account.wrong_password")
		return
	case len(password) < minPassword || len(password) > maxPassword:
		d.renderAccount(w, rq, http.StatusBadRequest, "", "signup.bad_password")
		return
	}
	hash, err := hashPassword(password)
	if err == nil {
		err = rq.b.Store.SetPassword(rq.Context(), rq.s.User, hash)
	}
	if err != nil {
		d.fail(w, rq, "changing the password", err)
		return
	}
	// Every other session ends: whoever knew the old password is out.
	list, _ := d.sessions(rq.Context(), rq.b.Redis, rq.s.User)
	for _, s := range list {
		if s.hash != rq.s.hash {
			d.endSession(rq.Context(), rq.b.Redis, s)
		}
	}
	d.renderAccount(w, rq, http.StatusOK, "account.password_changed", "")
}

func (d *Dashboard) setIPLogging(w http.ResponseWriter, rq *request) {
	on := rq.PostFormValue("ip_logging") == "on"
	if err := rq.b.Store.SetIPLogging(rq.Context(), rq.s.User, on); err != nil {
		d.fail(w, rq, "changing IP logging", err)
		return
	}
	d.renderAccount(w, rq, http.StatusOK, "account.saved", "")
}

// export streams everything held about the customer: the account API's
// export, recorded in the audit trail.
func (d *Dashboard) export(w http.ResponseWriter, rq *request) {
	ctx, user, now := rq.Context(), rq.s.User, time.Now()
	if _, err := rq.b.Store.AddAudit(ctx, now, usagelog.AuditUserExport, user, map[string]string{"via": "dashboard"}); err != nil {
		d.fail(w, rq, "recording an export", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", `attachment; filename="account-export-`+user+`.json"`)
	if err := rq.b.Store.ExportUser(ctx, user, now, w); err != nil {
		d.log.Error("dashboard: export cut short", zap.String("user", user), zap.Error(err))
		panic(http.ErrAbortHandler)
	}
}

func (d *Dashboard) deleteAccount(w http.ResponseWriter, rq *request) {
	ok, err := d.checkCurrent(rq)
	if err != nil {
		d.fail(w, rq, "reading the account", err)
		return
	}
	if !ok || rq.PostFormValue("confirm") != "on" {
		d.renderAccount(w, rq, http.StatusBadRequest, "", "account.delete_unconfirmed")
		return
	}
	user := rq.s.User
	// The erasure ends every session of the user's, this one included.
	if _, _, err := rq.b.Books.EraseUser(rq.Context(), user); err != nil {
		d.fail(w, rq, "erasing the account", err)
		return
	}
	d.log.Info("dashboard: account deleted", zap.String("user", user))
	http.SetCookie(w, d.cookie(rq.Request, "", -1))
	rq.s = nil
	d.render(w, rq, http.StatusOK, "deleted", view{})
}

type sessionsData struct {
	Sessions []*session
	Current  string
}

func (d *Dashboard) sessionsPage(w http.ResponseWriter, rq *request) {
	list, err := d.sessions(rq.Context(), rq.b.Redis, rq.s.User)
	if err != nil {
		d.fail(w, rq, "listing sessions", err)
		return
	}
	d.render(w, rq, http.StatusOK, "sessions", view{Data: sessionsData{Sessions: list, Current: rq.s.ID()}})
}

func (d *Dashboard) endSessionPage(w http.ResponseWriter, rq *request) {
	list, err := d.sessions(rq.Context(), rq.b.Redis, rq.s.User)
	if err != nil {
		d.fail(w, rq, "listing sessions", err)
		return
	}
	id := rq.PathValue("id")
	for _, s := range list {
		if s.ID() != id {
			continue
		}
		d.endSession(rq.Context(), rq.b.Redis, s)
		if s.hash == rq.s.hash {
			http.SetCookie(w, d.cookie(rq.Request, "", -1))
			d.redirect(w, rq.Request, "/login")
			return
		}
		d.redirect(w, rq.Request, "/sessions")
		return
	}
	d.notFound(w, rq)
}
