package dashboard

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	mail "github.com/wneessen/go-mail"
	"go.uber.org/zap"
)

// SMTP is the mail server the dashboard sends its links through.
type SMTP struct {
	// Host and Port are the server's; port 465 speaks TLS from the start,
	// any other STARTTLS when the server offers it.
	Host string
	Port int
	// Username and Password authenticate, when set.
	Username, Password string
	// From is the sender, such as "Example <noreply@example.com>".
	From string
}

// Emailed links: what each is for, and how long it lives.
const (
	linkVerify = "verify" // proves an email (sign-up, change of email)
	linkReset  = "reset"  // sets a new password
	linkClaim  = "claim"  // an invited user sets a password
)

var linkTTL = map[string]time.Duration{
	linkVerify: 24 * time.Hour,
	linkReset:  30 * time.Minute,
	linkClaim:  24 * time.Hour,
}

// mailTimeout bounds one delivery.
const mailTimeout = 30 * time.Second

// linkKey is where a link's token is kept: only its SHA-256.
func linkKey(kind, token string) string { return "ait:dash_link:" + kind + ":" + hashToken(token) }

// newLink stores a single-use token of kind for user and email, and
// returns the absolute link that carries it.
func (d *Dashboard) newLink(ctx context.Context, rdb redis.UniversalClient, r *http.Request, kind, user, email string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	if err := rdb.Set(ctx, linkKey(kind, token), user+"\n"+email, linkTTL[kind]).Err(); err != nil {
		return "", err
	}
	return d.baseURL(r) + "/" + kind + "?token=" + url.QueryEscape(token), nil
}

// peekLink returns the user and email of a live token without using it.
func peekLink(ctx context.Context, rdb redis.UniversalClient, kind, token string) (user, email string, err error) {
	v, err := rdb.Get(ctx, linkKey(kind, token)).Result()
	return splitLink(v, err)
}

// useLink takes a token: it works once.
func useLink(ctx context.Context, rdb redis.UniversalClient, kind, token string) (user, email string, err error) {
	var get *redis.StringCmd
	_, err = rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, linkKey(kind, token))
		p.Del(ctx, linkKey(kind, token))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", "", err
	}
	return splitLink(get.Result())
}

var errBadLink = errors.New("unknown, used or expired link")

func splitLink(v string, err error) (string, string, error) {
	if errors.Is(err, redis.Nil) {
		return "", "", errBadLink
	}
	if err != nil {
		return "", "", err
	}
	user, email, ok := strings.Cut(v, "\n")
	if !ok {
		return "", "", errBadLink
	}
	return user, email, nil
}

// baseURL is the dashboard's absolute address: the configured one, else
// the request's scheme and host (which the Caddy site's address bounds).
func (d *Dashboard) baseURL(r *http.Request) string {
	if d.cfg.BaseURL != "" {
		return strings.TrimRight(d.cfg.BaseURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + d.cfg.Prefix
}

// sendLink mails link to the address in the background, so that the page
// answers as fast whether or not a message goes out. Message kind names
// the catalogue's texts: mail.<kind>.subject and mail.<kind>.body, where
// {link} is replaced. Neither the link nor its token is logged.
func (d *Dashboard) sendLink(rq *request, to, kind, link string) {
	subject, body := rq.t("mail."+kind+".subject"), strings.ReplaceAll(rq.t("mail."+kind+".body"), "{link}", link)
	user := ""
	if rq.s != nil {
		user = rq.s.User
	}
	d.mailWG.Add(1)
	go func() {
		defer d.mailWG.Done()
		if err := d.deliver(to, subject, body); err != nil {
			d.log.Error("dashboard: sending mail failed", zap.String("kind", kind), zap.String("user", user), zap.Error(err))
		}
	}()
}

// deliver sends one plain-text message.
func (d *Dashboard) deliver(to, subject, body string) error {
	s := d.cfg.SMTP
	m := mail.NewMsg()
	if err := m.From(s.From); err != nil {
		return err
	}
	if err := m.To(to); err != nil {
		return err
	}
	m.Subject(subject)
	m.SetBodyString(mail.TypeTextPlain, body)
	opts := []mail.Option{mail.WithPort(s.Port), mail.WithTimeout(mailTimeout)}
	if s.Port == 465 {
		opts = append(opts, mail.WithSSL())
	} else {
		opts = append(opts, mail.WithTLSPolicy(mail.TLSOpportunistic))
	}
	if s.Username != "" {
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthPlain), mail.WithUsername(s.Username), mail.WithPassword(s.Password))
	}
	c, err := mail.NewClient(s.Host, opts...)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), mailTimeout)
	defer cancel()
	return c.DialAndSendWithContext(ctx, m)
}
