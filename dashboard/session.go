package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// Sessions live in Redis, shared by every node: the cookie holds a random
// 256-bit token, Redis only its SHA-256. A session ends after SessionIdle
// without use or SessionLifetime after sign-in, whichever comes first.
//
//	ait:dash_session:<sha256 hex>   hash: user, created, last (Unix ms), ua, ip, lang
//	ait:{#n}:<user>:dash_sessions   set of the user's session hashes (billing.AccountKey)

// Cookie names: the __Host- prefix (Secure, Path=/, no Domain) on HTTPS;
// plain HTTP is for localhost only.
const (
	cookieHTTPS = "__Host-aitoken_session"
	cookieHTTP  = "aitoken_session"
)

// touchEvery is how stale a session's last use may be before a request
// writes it again (saving a write per page view).
const touchEvery = time.Minute

// session is one signed-in browser.
type session struct {
	hash    string
	User    string
	Created time.Time
	Last    time.Time
	UA      string
	IP      string
	Lang    string
}

// ID is the session's name on the sessions page: a prefix of its hash,
// which tells nothing of the token.
func (s *session) ID() string { return s.hash[:16] }

func sessionKey(hash string) string      { return billing.DashSessionKey(hash) }
func userSessionsKey(user string) string { return billing.DashSessionsKey(user) }

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// ttl is how long Redis keeps a session used at last, made at created.
func (d *Dashboard) ttl(created, last time.Time) time.Duration {
	return min(d.cfg.SessionIdle, d.cfg.SessionLifetime-last.Sub(created))
}

// newSession starts a session for user and sets its cookie. Any session
// the browser held is ended first: a new token at every sign-in.
func (d *Dashboard) newSession(ctx context.Context, w http.ResponseWriter, r *http.Request, rdb redis.UniversalClient, user, lang string) error {
	if old, _ := d.loadSession(ctx, r, rdb); old != nil {
		d.endSession(ctx, rdb, old)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return err
	}
	token := hex.EncodeToString(raw[:])
	hash := hashToken(token)
	now := time.Now()
	ua := r.UserAgent()
	if len(ua) > 300 {
		ua = ua[:300]
	}
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, sessionKey(hash), "user", user, "created", now.UnixMilli(), "last", now.UnixMilli(),
			"ua", ua, "ip", d.clientIP(r), "lang", lang)
		p.PExpire(ctx, sessionKey(hash), d.ttl(now, now))
		return nil
	})
	if err == nil {
		err = rdb.SAdd(ctx, userSessionsKey(user), hash).Err()
	}
	if err != nil {
		return err
	}
	http.SetCookie(w, d.cookie(r, token, int(d.cfg.SessionLifetime/time.Second)))
	return nil
}

// cookie is the session cookie carrying value; maxAge < 0 deletes it.
func (d *Dashboard) cookie(r *http.Request, value string, maxAge int) *http.Cookie {
	c := &http.Cookie{Name: cookieHTTP, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteLaxMode}
	if r.TLS != nil {
		c.Name, c.Secure = cookieHTTPS, true
	}
	return c
}

// loadSession returns the request's live session, or nil.
func (d *Dashboard) loadSession(ctx context.Context, r *http.Request, rdb redis.UniversalClient) (*session, error) {
	name := cookieHTTP
	if r.TLS != nil {
		name = cookieHTTPS
	}
	c, err := r.Cookie(name)
	if err != nil || len(c.Value) != 64 {
		return nil, nil
	}
	return d.readSession(ctx, rdb, hashToken(c.Value), true)
}

// readSession reads the session stored under hash, ending it if it has
// outlived its lifetime; touch records a use.
func (d *Dashboard) readSession(ctx context.Context, rdb redis.UniversalClient, hash string, touch bool) (*session, error) {
	m, err := rdb.HGetAll(ctx, sessionKey(hash)).Result()
	if err != nil {
		return nil, err
	}
	if m["user"] == "" {
		return nil, nil
	}
	ms := func(k string) time.Time { n, _ := strconv.ParseInt(m[k], 10, 64); return time.UnixMilli(n) }
	s := &session{hash: hash, User: m["user"], Created: ms("created"), Last: ms("last"), UA: m["ua"], IP: m["ip"], Lang: m["lang"]}
	now := time.Now()
	if now.Sub(s.Created) >= d.cfg.SessionLifetime || now.Sub(s.Last) >= d.cfg.SessionIdle {
		d.endSession(ctx, rdb, s)
		return nil, nil
	}
	if touch && now.Sub(s.Last) >= touchEvery {
		s.Last = now
		_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, sessionKey(hash), "last", now.UnixMilli())
			p.PExpire(ctx, sessionKey(hash), d.ttl(s.Created, now))
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// endSession deletes s from Redis: its cookie is worthless from now on,
// wherever it is.
func (d *Dashboard) endSession(ctx context.Context, rdb redis.UniversalClient, s *session) {
	rdb.Del(ctx, sessionKey(s.hash))
	rdb.SRem(ctx, userSessionsKey(s.User), s.hash)
}

// sessions returns user's live sessions, newest use first, and forgets
// the hashes of ended ones.
func (d *Dashboard) sessions(ctx context.Context, rdb redis.UniversalClient, user string) ([]*session, error) {
	hashes, err := rdb.SMembers(ctx, userSessionsKey(user)).Result()
	if err != nil {
		return nil, err
	}
	var out []*session
	for _, h := range hashes {
		s, err := d.readSession(ctx, rdb, h, false)
		if err != nil {
			return nil, err
		}
		if s == nil || s.User != user {
			rdb.SRem(ctx, userSessionsKey(user), h)
			continue
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Last.After(out[j].Last) })
	return out, nil
}

// rateScript counts an attempt in a fixed window (KEYS[1], ARGV[1] the
// window in ms) and returns the count with this one.
var rateScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
`)

// Sign-in limits: attempts per account and per client address in
// signInWindow.
const (
	signInWindow     = 15 * time.Minute
	signInPerAccount = 10
	signInPerAddress = 50
)

var errRateLimited = errors.New("too many attempts")

// allowSignIn counts a sign-in (or reset) attempt for email from the
// request's address, and refuses it over either limit.
func (d *Dashboard) allowSignIn(ctx context.Context, rdb redis.UniversalClient, r *http.Request, email string) error {
	acct := hashToken(strings.ToLower(strings.TrimSpace(email)))[:32]
	for _, c := range []struct {
		key   string
		limit int64
	}{{"ait:dash_rl:acct:" + acct, signInPerAccount}, {"ait:dash_rl:addr:" + d.clientIP(r), signInPerAddress}} {
		n, err := rateScript.Run(ctx, rdb, []string{c.key}, signInWindow.Milliseconds()).Int64()
		if err != nil {
			return err
		}
		if n > c.limit {
			return errRateLimited
		}
	}
	return nil
}

// clientIP is the client's address, as Caddy's trusted proxies tell it
// when the glue says so.
func (d *Dashboard) clientIP(r *http.Request) string {
	if d.cfg.ClientIP != nil {
		if ip := d.cfg.ClientIP(r); ip != "" {
			return ip
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// device names a browser and system from a User-Agent, roughly.
func device(ua string) string {
	browser := "?"
	for _, b := range []struct{ tok, name string }{{"Edg/", "Edge"}, {"OPR/", "Opera"}, {"Firefox/", "Firefox"},
		{"Chrome/", "Chrome"}, {"Safari/", "Safari"}, {"curl/", "curl"}, {"Go-http-client", "Go"}} {
		if strings.Contains(ua, b.tok) {
			browser = b.name
			break
		}
	}
	system := ""
	for _, o := range []struct{ tok, name string }{{"Android", "Android"}, {"iPhone", "iOS"}, {"iPad", "iPadOS"},
		{"Windows", "Windows"}, {"Mac OS X", "macOS"}, {"CrOS", "ChromeOS"}, {"Linux", "Linux"}} {
		if strings.Contains(ua, o.tok) {
			system = o.name
			break
		}
	}
	if system == "" {
		return browser
	}
	return browser + " · " + system
}
