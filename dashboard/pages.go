package dashboard

import (
	"errors"
	"html/template"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cnaitoken/caddy-aitoken/accounting"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"amount": accounting.FormatAmount,
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			return v.UTC().Format("2006-01-02 15:04 UTC")
		case *time.Time:
			if v != nil {
				return v.UTC().Format("2006-01-02 15:04 UTC")
			}
		}
		return ""
	},
	"join":   strings.Join,
	"device": device,
}

type overviewData struct {
	Currency               string
	Balance, Held          money.Nanos
	SpendToday, SpendMonth money.Nanos
	Chart                  template.HTML
	Legend                 []legend
}

func (d *Dashboard) overview(w http.ResponseWriter, rq *request) {
	ctx, user := rq.Context(), rq.s.User
	bal, held, err := rq.b.Accounts.Balance(ctx, user)
	if err != nil {
		d.fail(w, rq, "reading the balance", err)
		return
	}
	now := time.Now().UTC()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	from := today.AddDate(0, 0, 1-chartDays)
	end := today.AddDate(0, 0, 1)
	// One read of the chart's days gives today; the month may start
	// before them.
	days, err := rq.b.Store.DailySpend(ctx, user, from, end)
	if err != nil {
		d.fail(w, rq, "reading daily spend", err)
		return
	}
	v := overviewData{Currency: d.cfg.Currency, Balance: bal, Held: held}
	for _, r := range days {
		if !r.Day.Before(today) {
			v.SpendToday += r.Cost
		}
		if !r.Day.Before(month) {
			v.SpendMonth += r.Cost
		}
	}
	if month.Before(from) {
		early, err := rq.b.Store.Spend(ctx, user, month, from)
		if err != nil {
			d.fail(w, rq, "reading the month's spend", err)
			return
		}
		v.SpendMonth += early
	}
	v.Chart, v.Legend = spendChart(days, from, rq.t("chart.other"), rq.t("chart.title"))
	d.render(w, rq, http.StatusOK, "overview", view{Data: v})
}

type keysData struct {
	Keys     []usagelog.Key
	Secret   string
	Created  usagelog.Key
	CanMint  bool
	Sent     bool // a verification link was just sent
	Form     keyForm
	Currency string
}

type keyForm struct{ Name, Models, RPM, TPM, Expires string }

func (d *Dashboard) keysPage(w http.ResponseWriter, rq *request) {
	d.renderKeys(w, rq, http.StatusOK, keysData{}, "")
}

func (d *Dashboard) renderKeys(w http.ResponseWriter, rq *request, status int, v keysData, msg string) {
	keys, err := rq.b.Store.ListKeys(rq.Context(), rq.s.User)
	if err != nil {
		d.fail(w, rq, "listing keys", err)
		return
	}
	v.Keys, v.CanMint = keys, true
	if d.cfg.SMTP != nil {
		l, err := rq.b.Store.GetLogin(rq.Context(), rq.s.User)
		if err != nil {
			d.fail(w, rq, "reading the account", err)
			return
		}
		v.CanMint = l.EmailVerifiedAt != nil
	}
	errText := ""
	if msg != "" {
		errText = rq.t(msg)
	}
	d.render(w, rq, status, "keys", view{Data: v, Error: errText})
}

func (d *Dashboard) createKey(w http.ResponseWriter, rq *request) {
	r := rq.Request
	f := keyForm{Name: strings.TrimSpace(r.PostFormValue("name")), Models: r.PostFormValue("models"),
		RPM: r.PostFormValue("rpm"), TPM: r.PostFormValue("tpm"), Expires: r.PostFormValue("expires")}
	bad := func(msg string) { d.renderKeys(w, rq, http.StatusBadRequest, keysData{Form: f}, msg) }
	if d.cfg.SMTP != nil {
		l, err := rq.b.Store.GetLogin(r.Context(), rq.s.User)
		if err != nil {
			d.fail(w, rq, "reading the account", err)
			return
		}
		if l.EmailVerifiedAt == nil {
			d.renderKeys(w, rq, http.StatusForbidden, keysData{Form: f}, "keys.unverified")
			return
		}
	}
	k := usagelog.Key{UserID: rq.s.User, Name: f.Name}
	if len(k.Name) > 100 {
		bad("keys.bad_name")
		return
	}
	for _, m := range strings.FieldsFunc(f.Models, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		if len(m) > 200 || len(k.Models) >= 50 {
			bad("keys.bad_models")
			return
		}
		k.Models = append(k.Models, m)
	}
	for _, n := range []struct {
		s   string
		dst *int64
	}{{f.RPM, &k.RPM}, {f.TPM, &k.TPM}} {
		if n.s == "" {
			continue
		}
		v, err := strconv.ParseInt(n.s, 10, 64)
		if err != nil || v < 0 || v > 1e9 {
			bad("keys.bad_limit")
			return
		}
		*n.dst = v
	}
	if f.Expires != "" {
		t, err := time.Parse("2006-01-02", f.Expires)
		if err != nil || !t.After(time.Now()) {
			bad("keys.bad_expiry")
			return
		}
		k.ExpiresAt = &t
	}
	key, secret, err := rq.b.Books.IssueKey(r.Context(), k)
	if err != nil {
		d.fail(w, rq, "issuing a key", err)
		return
	}
	// The secret is in this answer only: never stored, never redirected.
	d.renderKeys(w, rq, http.StatusCreated, keysData{Secret: secret, Created: key}, "")
}

func (d *Dashboard) revokeKey(w http.ResponseWriter, rq *request) {
	k, err := rq.b.Store.GetKey(rq.Context(), rq.PathValue("id"))
	if errors.Is(err, usagelog.ErrNotFound) || err == nil && k.UserID != rq.s.User {
		d.notFound(w, rq)
		return
	}
	if err != nil {
		d.fail(w, rq, "reading a key", err)
		return
	}
	if _, err := rq.b.Books.RevokeKey(rq.Context(), k.ID); err != nil {
		d.fail(w, rq, "revoking a key", err)
		return
	}
	d.redirect(w, rq.Request, "/keys")
}

func (d *Dashboard) privacy(w http.ResponseWriter, rq *request) {
	var policy template.HTML
	if d.cfg.PrivacyPolicyFile != "" {
		b, err := os.ReadFile(d.cfg.PrivacyPolicyFile)
		if err != nil {
			d.fail(w, rq, "reading the privacy policy", err)
			return
		}
		// The operator's own file, trusted as the site's content.
		policy = template.HTML(b)
	}
	d.render(w, rq, http.StatusOK, "privacy", view{Data: policy})
}
