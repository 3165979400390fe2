package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/internal/smtpcapture"
)

const mailWait = 10 * time.Second

// startMail starts a Caddy whose dashboard mails through a capturing SMTP
// server, and returns the server.
func startMail(t *testing.T, signup string) *smtpcapture.Server {
	t.Helper()
	srv := smtpcapture.Start(t, smtpcapture.WithAuth("mailer", "mail-pw"))
	startCaddyWith(t, setup{signup: signup, smtp: fmt.Sprintf(`smtp {
				host %s
				port %d
				username mailer
				password mail-pw
				from "Dash <noreply@dash.test>"
			}`, srv.Host, srv.Port)})
	t.Cleanup(func() { startCaddy(t) })
	return srv
}

// linkPath returns the dashboard path of a mailed link, after checking
// its kind.
func linkPath(t *testing.T, msg *smtpcapture.Message, kind string) string {
	t.Helper()
	link := msg.Link(t)
	p, ok := strings.CutPrefix(link, base)
	if !ok || !strings.HasPrefix(p, "/"+kind+"?token=") {
		t.Fatalf("link %q, want %s/%s?token=…", link, base, kind)
	}
	return p
}

func token(p string) string {
	_, tok, _ := strings.Cut(p, "token=")
	u, _ := url.QueryUnescape(tok)
	return u
}

// noMail fails if a message arrives within a short while.
func noMail(t *testing.T, srv *smtpcapture.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if m, err := srv.Wait(ctx); err == nil {
		t.Fatalf("unexpected mail to %v: %s", m.To, m.Subject)
	}
}

func TestVerifyResetAndChangeEmailByMail(t *testing.T) {
	srv := startMail(t, "")
	email := fmt.Sprintf("mail%d-%d@example.com", time.Now().UnixNano(), seq.Add(1))
	c := newClient(t)
	signup := url.Values{"email": {email}, "password": {"correct horse battery"}, "adult": {"on"}}
	resp, _ := c.do("POST", "/signup", signup)
	if resp.StatusCode != http.StatusSeeOther || len(c.jar.Cookies(resp.Request.URL)) != 0 {
		t.Fatalf("sign-up: %d, cookies %v (with SMTP it signs in only after the answer a known email gets too)",
			resp.StatusCode, c.jar.Cookies(resp.Request.URL))
	}
	msg := srv.Next(t, mailWait)
	if msg.To[0] != email || msg.Subject != "Verify your email" || msg.AuthUser != "mailer" {
		t.Fatalf("verification mail %v %q as %q", msg.To, msg.Subject, msg.AuthUser)
	}
	// The same email again: the same answer, and a mail to the mailbox.
	again, _ := newClient(t).do("POST", "/signup", signup)
	if again.StatusCode != resp.StatusCode || again.Header.Get("Location") != resp.Header.Get("Location") {
		t.Fatalf("sign-up with a known email: %d %q, a new one: %d %q", again.StatusCode, again.Header.Get("Location"),
			resp.StatusCode, resp.Header.Get("Location"))
	}
	if m := srv.Next(t, mailWait); m.To[0] != email || m.Subject != "Your account" || !strings.Contains(m.Text, "/login") {
		t.Fatalf("mail for a known email at sign-up: %v %q", m.To, m.Subject)
	}
	if resp, _ := c.do("POST", "/login", url.Values{"email": {email}, "password": {"correct horse battery"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in after sign-up: %d", resp.StatusCode)
	}
	linkPath(t, msg, "verify")
	c.do("POST", "/verify/resend", url.Values{})
	verify := linkPath(t, srv.Next(t, mailWait), "verify")

	// Unverified: no keys.
	if _, body := c.do("GET", "/keys", nil); !strings.Contains(body, "first verify your email") || !strings.Contains(body, "/verify/resend") {
		t.Fatal("the keys page does not say to verify the email")
	}
	if resp, _ := c.do("POST", "/keys", url.Values{"name": {"x"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("an unverified account minted a key: %d", resp.StatusCode)
	}
	// Following the link spends nothing; the form's post verifies, once.
	if resp, body := c.do("GET", verify, nil); resp.StatusCode != 200 || !strings.Contains(body, email) {
		t.Fatalf("verify page: %d", resp.StatusCode)
	}
	if resp, body := c.do("POST", "/verify", url.Values{"token": {token(verify)}}); resp.StatusCode != 200 || !strings.Contains(body, "verified") {
		t.Fatalf("verify: %d %s", resp.StatusCode, body)
	}
	if resp, _ := c.do("POST", "/verify", url.Values{"token": {token(verify)}}); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a verification link worked twice: %d", resp.StatusCode)
	}
	if resp, _ := c.do("POST", "/keys", url.Values{"name": {"x"}}); resp.StatusCode != http.StatusCreated {
		t.Fatalf("a verified account cannot mint a key: %d", resp.StatusCode)
	}

	// Forgot password: the same answer for a known and an unknown email,
	// and mail to the known one only.
	anon := newClient(t)
	r1, b1 := anon.do("POST", "/forgot", url.Values{"email": {email}})
	msg = srv.Next(t, mailWait)
	r2, b2 := anon.do("POST", "/forgot", url.Values{"email": {"nobody-" + email}})
	if r1.StatusCode != 200 || r1.StatusCode != r2.StatusCode || b1 != b2 {
		t.Fatalf("forgot: known %d / unknown %d answer differently", r1.StatusCode, r2.StatusCode)
	}
	noMail(t, srv)
	reset := linkPath(t, msg, "reset")
	if msg.To[0] != email {
		t.Fatalf("reset mail to %v", msg.To)
	}
	rdb := redisClient(t)
	keys, _ := rdb.Keys(context.Background(), "ait:dash_link:reset:*").Result()
	for _, k := range keys {
		if strings.Contains(k, token(reset)) {
			t.Fatal("the reset token is stored in clear")
		}
		if ttl := rdb.TTL(context.Background(), k).Val(); ttl <= 0 || ttl > 30*time.Minute {
			t.Fatalf("reset token lives %s", ttl)
		}
	}
	if resp, _ := anon.do("POST", "/reset", url.Values{"token": {token(reset)}, "password": {"short"}}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("short password: %d", resp.StatusCode)
	}
	resp, body := anon.do("POST", "/reset", url.Values{"token": {token(reset)}, "password": {"a brand new password"}})
	if resp.StatusCode != 200 || !strings.Contains(body, "password was changed") {
		t.Fatalf("reset: %d %s", resp.StatusCode, body)
	}
	if resp, _ := anon.do("POST", "/reset", url.Values{"token": {token(reset)}, "password": {"another new password"}}); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a reset link worked twice: %d", resp.StatusCode)
	}
	if resp, _ := c.do("GET", "/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatal("a session outlived the reset")
	}
	if resp, _ := c.do("POST", "/login", url.Values{"email": {email}, "password": {"a brand new password"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in with the new password: %d", resp.StatusCode)
	}

	// An expired reset link is refused.
	anon.do("POST", "/forgot", url.Values{"email": {email}})
	late := linkPath(t, srv.Next(t, mailWait), "reset")
	keys, _ = rdb.Keys(context.Background(), "ait:dash_link:reset:*").Result()
	for _, k := range keys {
		rdb.PExpire(context.Background(), k, time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if resp, _ := anon.do("POST", "/reset", url.Values{"token": {token(late)}, "password": {"a brand new password 2"}}); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("an expired reset link worked: %d", resp.StatusCode)
	}

	// Change of email: it changes when the link sent to the new address
	// is used.
	newEmail := "new-" + email
	resp, body = c.do("POST", "/account/email", url.Values{"email": {newEmail}, "current_password": {"a brand new password"}})
	if resp.StatusCode != 200 || !strings.Contains(body, "on its way") {
		t.Fatalf("change email: %d", resp.StatusCode)
	}
	msg = srv.Next(t, mailWait)
	if msg.To[0] != newEmail {
		t.Fatalf("change-of-email mail to %v", msg.To)
	}
	if _, body := c.do("GET", "/account", nil); !strings.Contains(body, email+" (verified)") {
		t.Fatal("the email changed before the link was used")
	}
	c.do("POST", "/verify", url.Values{"token": {token(linkPath(t, msg, "verify"))}})
	if _, body := c.do("GET", "/account", nil); !strings.Contains(body, newEmail+" (verified)") {
		t.Fatal("the email did not change with the link")
	}
}

func TestInviteClaimedByMail(t *testing.T) {
	srv := startMail(t, "invite")
	email := fmt.Sprintf("invited%d-%d@example.com", time.Now().UnixNano(), seq.Add(1))
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://localhost:%d/aitoken/users", env.adminPort),
		strings.NewReader(`{"email":"`+email+`","name":"Invited"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("admin create user: %d", resp.StatusCode)
	}

	c := newClient(t)
	if _, body := c.do("GET", "/signup", nil); !strings.Contains(body, "by invitation") || strings.Contains(body, `name="password"`) {
		t.Fatal("the invite sign-up page")
	}
	r1, b1 := c.do("POST", "/signup", url.Values{"email": {email}})
	msg := srv.Next(t, mailWait)
	r2, b2 := c.do("POST", "/signup", url.Values{"email": {"nobody-" + email}})
	b2 = strings.ReplaceAll(b2, "nobody-", "")
	if r1.StatusCode != 200 || r1.StatusCode != r2.StatusCode || b1 != b2 {
		t.Fatalf("invite: known %d / unknown %d answer differently", r1.StatusCode, r2.StatusCode)
	}
	noMail(t, srv)
	claim := linkPath(t, msg, "claim")
	if resp, body := c.do("GET", claim, nil); resp.StatusCode != 200 || !strings.Contains(body, email) {
		t.Fatalf("claim page: %d", resp.StatusCode)
	}
	form := url.Values{"token": {token(claim)}, "password": {"my invited password"}, "adult": {"on"}}
	if resp, _ := c.do("POST", "/claim", form); resp.StatusCode != http.StatusSeeOther || c.session() == "" {
		t.Fatalf("claim: %d", resp.StatusCode)
	}
	if resp, _ := c.do("POST", "/keys", url.Values{"name": {"x"}}); resp.StatusCode != http.StatusCreated {
		t.Fatalf("a claimed (verified) account cannot mint: %d", resp.StatusCode)
	}
	if resp, _ := newClient(t).do("POST", "/claim", form); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a claim link worked twice: %d", resp.StatusCode)
	}
	if resp, _ := newClient(t).do("POST", "/login", url.Values{"email": {email}, "password": {"my invited password"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in after the claim: %d", resp.StatusCode)
	}
}

func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(env.redis.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}
