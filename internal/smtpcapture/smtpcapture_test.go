package smtpcapture

import (
	"context"
	"errors"
	"fmt"
	"net/smtp"
	"strings"
	"sync"
	"testing"
	"time"

	mail "github.com/wneessen/go-mail"
)

const wait = 10 * time.Second

// qpMessage is a message as a mailer writes it: quoted-printable, with a
// soft line break inside the link and a line that starts with a dot (which
// the client dot-stuffs and the server unstuffs).
const qpMessage = "From: Shop <noreply@shop.test>\r\n" +
	"To: ann@example.com\r\n" +
	"Subject: =?UTF-8?q?Sign_in_=E2=80=94_shop?=\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Hello Ann,\r\n" +
	"sign in here: https://shop.test/login?token=3Dabc&next=3D%2Fhome=\r\n" +
	"&x=3D1.\r\n" +
	".a line that starts with a dot\r\n"

func TestSendMail(t *testing.T) {
	srv := Start(t)
	if err := smtp.SendMail(srv.Addr, nil, "noreply@shop.test", []string{"ann@example.com", "audit@shop.test"}, []byte(qpMessage)); err != nil {
		t.Fatal(err)
	}
	m := srv.Next(t, wait)
	if m.From != "noreply@shop.test" || strings.Join(m.To, ",") != "ann@example.com,audit@shop.test" {
		t.Errorf("envelope = %s -> %v", m.From, m.To)
	}
	if m.Subject != "Sign in — shop" {
		t.Errorf("subject = %q", m.Subject)
	}
	want := "Hello Ann,\nsign in here: https://shop.test/login?token=abc&next=%2Fhome&x=1.\n.a line that starts with a dot\n"
	if m.Text != want || m.Body() != want {
		t.Errorf("text = %q, want %q", m.Text, want)
	}
	if got := m.Link(t); got != "https://shop.test/login?token=abc&next=%2Fhome&x=1" {
		t.Errorf("link = %q", got)
	}
	if m.AuthUser != "" {
		t.Errorf("AuthUser = %q without AUTH", m.AuthUser)
	}
	if got := m.Header.Get("From"); got != "Shop <noreply@shop.test>" {
		t.Errorf("From header = %q", got)
	}
}

func TestAuth(t *testing.T) {
	srv := Start(t, WithAuth("mailer", "pw"))
	msg := []byte("Subject: hi\r\n\r\nhi\r\n")
	rcpt := []string{"ann@example.com"}

	err := smtp.SendMail(srv.Addr, nil, "a@shop.test", rcpt, msg)
	if err == nil || !strings.Contains(err.Error(), "530") {
		t.Errorf("no AUTH: err = %v, want 530", err)
	}
	err = smtp.SendMail(srv.Addr, smtp.PlainAuth("", "mailer", "wrong", srv.Host), "a@shop.test", rcpt, msg)
	if err == nil || !strings.Contains(err.Error(), "535") {
		t.Errorf("wrong password: err = %v, want 535", err)
	}
	if err := smtp.SendMail(srv.Addr, smtp.PlainAuth("", "mailer", "pw", srv.Host), "a@shop.test", rcpt, msg); err != nil {
		t.Fatal(err)
	}
	if m := srv.Next(t, wait); m.AuthUser != "mailer" || m.Subject != "hi" {
		t.Errorf("AuthUser, Subject = %q, %q", m.AuthUser, m.Subject)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("%d messages kept, want only the authenticated one", n)
	}
}

// TestGoMail sends with the product's mail library: multipart text and
// HTML, AUTH PLAIN and LOGIN, quoted-printable and base64.
func TestGoMail(t *testing.T) {
	for _, tc := range []struct {
		auth mail.SMTPAuthType
		enc  mail.Encoding
	}{
		{mail.SMTPAuthPlain, mail.EncodingQP},
		{mail.SMTPAuthLogin, mail.EncodingB64},
	} {
		t.Run(string(tc.auth)+"/"+string(tc.enc), func(t *testing.T) {
			srv := Start(t, WithAuth("mailer", "pw"))
			c, err := mail.NewClient(srv.Host, mail.WithPort(srv.Port), mail.WithTLSPolicy(mail.NoTLS),
				mail.WithSMTPAuth(tc.auth), mail.WithUsername("mailer"), mail.WithPassword("pw"),
				mail.WithTimeout(wait))
			if err != nil {
				t.Fatal(err)
			}
			link := "https://dash.test/verify?email=ann%40example.com&token=" + strings.Repeat("x", 90)
			m := mail.NewMsg(mail.WithEncoding(tc.enc))
			if err := m.From("Shop <noreply@shop.test>"); err != nil {
				t.Fatal(err)
			}
			if err := m.To("ann@example.com"); err != nil {
				t.Fatal(err)
			}
			m.Subject("Vérifiez votre adresse ✓")
			m.SetBodyString(mail.TypeTextPlain, "Bonjour Ann,\nouvrez "+link+" pour vérifier.\n")
			m.AddAlternativeString(mail.TypeTextHTML, `<p>Bonjour Ann, <a href="`+strings.ReplaceAll(link, "&", "&amp;")+`">vérifier</a></p>`)
			if err := c.DialAndSend(m); err != nil {
				t.Fatal(err)
			}

			got := srv.Next(t, wait)
			if cte := "Content-Transfer-Encoding: " + string(tc.enc); !strings.Contains(string(got.Raw), cte) {
				t.Errorf("the message was not sent with %s:\n%s", cte, got.Raw)
			}
			if got.From != "noreply@shop.test" || len(got.To) != 1 || got.To[0] != "ann@example.com" || got.AuthUser != "mailer" {
				t.Errorf("envelope = %s -> %v as %q", got.From, got.To, got.AuthUser)
			}
			if got.Subject != "Vérifiez votre adresse ✓" {
				t.Errorf("subject = %q", got.Subject)
			}
			if !strings.Contains(got.Text, "Bonjour Ann,") || !strings.Contains(got.Text, "pour vérifier") {
				t.Errorf("text = %q", got.Text)
			}
			if !strings.Contains(got.HTML, `<a href="`) || !strings.Contains(got.HTML, "vérifier</a>") {
				t.Errorf("html = %q", got.HTML)
			}
			if l := got.Link(t); l != link {
				t.Errorf("link = %q, want %q", l, link)
			}
			htmlOnly := &Message{HTML: got.HTML}
			if l, _ := htmlOnly.FirstLink(); l != link {
				t.Errorf("link of the HTML part = %q, want %q", l, link)
			}
		})
	}
}

func TestFirstLink(t *testing.T) {
	for _, tc := range []struct {
		text, html, want string
	}{
		{"see https://a.test/x?y=1.", "", "https://a.test/x?y=1"},
		{"(https://a.test/p) and http://b.test", "", "https://a.test/p"},
		{"no link", `<a href='https://h.test/?a=1&amp;b=2'>go</a> https://later.test`, "https://h.test/?a=1&b=2"},
		{"", `<p>visit https://bare.test/&amp;x</p>`, "https://bare.test/&x"},
		{"ftp://nope.test", `<a href="/relative">x</a>`, ""},
	} {
		m := &Message{Text: tc.text, HTML: tc.html}
		got, ok := m.FirstLink()
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("FirstLink(%q, %q) = %q, %v; want %q", tc.text, tc.html, got, ok, tc.want)
		}
	}
}

func TestWaitOrderTimeoutAndClose(t *testing.T) {
	srv := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := srv.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with no message: err = %v, want the deadline", err)
	}

	got := make(chan string)
	go func() { // a waiter before the message arrives
		m, err := srv.Wait(context.Background())
		if err != nil {
			got <- err.Error()
			return
		}
		got <- m.Subject
	}()
	for i := 1; i <= 3; i++ {
		if err := smtp.SendMail(srv.Addr, nil, "a@shop.test", []string{"b@shop.test"}, fmt.Appendf(nil, "Subject: m%d\r\n\r\nbody\r\n", i)); err != nil {
			t.Fatal(err)
		}
	}
	if s := <-got; s != "m1" {
		t.Errorf("first waiter got %q, want m1", s)
	}
	if s := srv.Next(t, wait).Subject; s != "m2" {
		t.Errorf("next = %q, want m2", s)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if s := srv.Next(t, wait).Subject; s != "m3" {
		t.Errorf("after Close: next = %q, want m3 (messages stay readable)", s)
	}
	if _, err := srv.Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait on a closed, drained server: err = %v, want ErrClosed", err)
	}
	if err := smtp.SendMail(srv.Addr, nil, "a@shop.test", []string{"b@shop.test"}, []byte("Subject: late\r\n\r\nx\r\n")); err == nil {
		t.Error("a closed server accepted a message")
	}
}

func TestConcurrentSenders(t *testing.T) {
	srv := Start(t)
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			msg := fmt.Appendf(nil, "Subject: s%d\r\n\r\nhttps://x.test/%d\r\n", i, i)
			if err := smtp.SendMail(srv.Addr, nil, "a@shop.test", []string{"b@shop.test"}, msg); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for range n {
		m := srv.Next(t, wait)
		seen[m.Link(t)] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct messages, want %d", len(seen), n)
	}
}

func TestRejects(t *testing.T) {
	srv := Start(t)
	c, err := smtp.Dial(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Rcpt("b@shop.test"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("RCPT before MAIL: err = %v, want 503", err)
	}
	if _, err := c.Data(); err == nil {
		t.Error("DATA before MAIL was accepted")
	}
	if err := c.Mail("a@shop.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@shop.test"); err == nil {
		t.Error("RCPT after RSET was accepted")
	}
	if err := c.Quit(); err != nil {
		t.Error(err)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("%d messages kept, want none", n)
	}
}
