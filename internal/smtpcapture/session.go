package smtpcapture

import (
	"encoding/base64"
	"io"
	"net"
	"net/textproto"
	"strings"
	"time"
)

// idleTimeout ends a session whose client says nothing for this long.
const idleTimeout = time.Minute

// session is one SMTP connection (RFC 5321, the part clients use).
type session struct {
	srv  *Server
	conn net.Conn
	tp   *textproto.Conn

	authUser string // "" until AUTH succeeds
	from     string
	to       []string
	inMail   bool // after MAIL FROM, until the message or RSET
}

func (s *session) run() {
	s.tp = textproto.NewConn(s.conn)
	s.reply(220, "smtpcapture ESMTP ready")
	for {
		_ = s.conn.SetDeadline(time.Now().Add(idleTimeout))
		line, err := s.tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			s.reset()
			s.reply(250, "smtpcapture greets "+arg, "8BITMIME", "SMTPUTF8", "SIZE 10485760", "AUTH PLAIN LOGIN")
		case "HELO":
			s.reset()
			s.reply(250, "smtpcapture greets "+arg)
		case "AUTH":
			s.auth(arg)
		case "MAIL":
			s.mail(arg)
		case "RCPT":
			s.rcpt(arg)
		case "DATA":
			if !s.data() {
				return
			}
		case "RSET":
			s.reset()
			s.reply(250, "2.0.0 OK")
		case "NOOP":
			s.reply(250, "2.0.0 OK")
		case "VRFY":
			s.reply(252, "2.1.5 cannot verify, will accept")
		case "QUIT":
			s.reply(221, "2.0.0 bye")
			return
		default:
			s.reply(502, "5.5.2 command not implemented")
		}
	}
}

func (s *session) reset() {
	s.from, s.to, s.inMail = "", nil, false
}

// reply sends a one- or multi-line reply: code text, then code ext... .
func (s *session) reply(code int, lines ...string) {
	for i, l := range lines {
		sep := " "
		if i < len(lines)-1 {
			sep = "-"
		}
		if err := s.tp.PrintfLine("%d%s%s", code, sep, l); err != nil {
			return
		}
	}
}

func (s *session) auth(arg string) {
	if s.authUser != "" {
		s.reply(503, "5.5.1 already authenticated")
		return
	}
	mech, initial, hasInitial := strings.Cut(arg, " ")
	var user, pass string
	switch strings.ToUpper(mech) {
	case "PLAIN":
		resp := initial
		if !hasInitial {
			var ok bool
			if resp, ok = s.challenge(""); !ok {
				return
			}
		}
		raw, err := base64.StdEncoding.DecodeString(resp)
		parts := strings.Split(string(raw), "\x00")
		if err != nil || len(parts) != 3 {
			s.reply(501, "5.5.2 malformed AUTH PLAIN response")
			return
		}
		user, pass = parts[1], parts[2]
	case "LOGIN":
		u, ok := initial, hasInitial
		if !ok {
			if u, ok = s.challenge("Username:"); !ok {
				return
			}
		}
		p, ok := s.challenge("Password:")
		if !ok {
			return
		}
		ub, err1 := base64.StdEncoding.DecodeString(u)
		pb, err2 := base64.StdEncoding.DecodeString(p)
		if err1 != nil || err2 != nil {
			s.reply(501, "5.5.2 malformed AUTH LOGIN response")
			return
		}
		user, pass = string(ub), string(pb)
	default:
		s.reply(504, "5.5.4 unrecognized authentication type")
		return
	}
	if s.srv.user != "" && (user != s.srv.user || pass != s.srv.pass) {
		s.reply(535, "5.7.8 authentication credentials invalid")
		return
	}
	s.authUser = user
	s.reply(235, "2.7.0 authentication successful")
}

// challenge sends a 334 prompt (base64 of prompt) and reads the answer;
// false when the client cancelled ("*") or the connection broke.
func (s *session) challenge(prompt string) (string, bool) {
	s.reply(334, base64.StdEncoding.EncodeToString([]byte(prompt)))
	line, err := s.tp.ReadLine()
	if err != nil {
		return "", false
	}
	if line == "*" {
		s.reply(501, "5.0.0 authentication cancelled")
		return "", false
	}
	return line, true
}

func (s *session) mail(arg string) {
	if s.srv.user != "" && s.authUser == "" {
		s.reply(530, "5.7.0 authentication required")
		return
	}
	addr, ok := pathArg(arg, "FROM:")
	if !ok {
		s.reply(501, "5.5.4 syntax: MAIL FROM:<address>")
		return
	}
	s.reset()
	s.from, s.inMail = addr, true
	s.reply(250, "2.1.0 OK")
}

func (s *session) rcpt(arg string) {
	if !s.inMail {
		s.reply(503, "5.5.1 need MAIL before RCPT")
		return
	}
	addr, ok := pathArg(arg, "TO:")
	if !ok || addr == "" {
		s.reply(501, "5.5.4 syntax: RCPT TO:<address>")
		return
	}
	s.to = append(s.to, addr)
	s.reply(250, "2.1.5 OK")
}

// data reads the message; false when the connection must end.
func (s *session) data() bool {
	if !s.inMail || len(s.to) == 0 {
		s.reply(503, "5.5.1 need MAIL and RCPT before DATA")
		return true
	}
	s.reply(354, "end data with <CR><LF>.<CR><LF>")
	raw, err := io.ReadAll(io.LimitReader(s.tp.DotReader(), maxMessage+1))
	if err != nil {
		return false
	}
	if len(raw) > maxMessage {
		_, _ = io.Copy(io.Discard, s.tp.DotReader()) // the rest of this message
		s.reply(552, "5.3.4 message too big")
		s.reset()
		return true
	}
	m, err := parse(s.from, s.to, s.authUser, raw)
	if err != nil {
		s.reply(554, "5.6.0 "+err.Error())
		s.reset()
		return true
	}
	s.srv.add(m)
	s.reset()
	s.reply(250, "2.0.0 OK: queued")
	return true
}

// pathArg reads "FROM:<addr> params" (prefix FROM: or TO:) and returns addr.
func pathArg(arg, prefix string) (string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", false
	}
	rest := strings.TrimSpace(arg[len(prefix):])
	if !strings.HasPrefix(rest, "<") {
		return "", false
	}
	end := strings.IndexByte(rest, '>')
	if end < 0 {
		return "", false
	}
	return rest[1:end], true
}
