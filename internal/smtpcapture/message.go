package smtpcapture

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"html"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Message is one message the server received.
type Message struct {
	// From and To are the envelope (MAIL FROM and RCPT TO), which include
	// Bcc recipients.
	From string
	To   []string
	// AuthUser is the user name the client authenticated as, or "".
	AuthUser string

	// Header is the message's header; Subject is its Subject decoded
	// (RFC 2047 encoded words).
	Header  mail.Header
	Subject string
	// Text and HTML are the first text/plain and text/html bodies (of a
	// multipart message, its first such parts that are no attachments),
	// decoded from quoted-printable or base64, with lines ending in \n.
	Text string
	HTML string

	// Raw is the message as sent (after dot-unstuffing, lines ending in \n).
	Raw      []byte
	Received time.Time
}

// Body returns Text, or HTML if the message has no text part.
func (m *Message) Body() string {
	if m.Text != "" {
		return m.Text
	}
	return m.HTML
}

var (
	bareURL = regexp.MustCompile(`https?://[^\s<>"'` + "`" + `]+`)
	hrefURL = regexp.MustCompile(`(?i)\bhref\s*=\s*(?:"(https?://[^"]+)"|'(https?://[^']+)')`)
)

// FirstLink returns the first http(s) URL of the text body, else the first
// href of the HTML body, else the first URL in the HTML's text. A URL at
// the end of a sentence loses its trailing punctuation.
func (m *Message) FirstLink() (string, bool) {
	if u := bareURL.FindString(m.Text); u != "" {
		return trimURL(u), true
	}
	if sub := hrefURL.FindStringSubmatch(m.HTML); sub != nil {
		return html.UnescapeString(sub[1] + sub[2]), true
	}
	if u := bareURL.FindString(m.HTML); u != "" {
		return html.UnescapeString(trimURL(u)), true
	}
	return "", false
}

// Link is FirstLink for a test: it fails tb if the message has no link.
func (m *Message) Link(tb testing.TB) string {
	tb.Helper()
	u, ok := m.FirstLink()
	if !ok {
		tb.Fatalf("smtpcapture: no http(s) link in the message %q:\n%s", m.Subject, m.Body())
	}
	return u
}

// trimURL drops the punctuation that ends a sentence after a URL.
func trimURL(u string) string {
	u = strings.TrimRight(u, ".,;:!?")
	if strings.HasSuffix(u, ")") && !strings.Contains(u, "(") {
		u = strings.TrimSuffix(u, ")")
	}
	return u
}

// parse reads a received message.
func parse(from string, to []string, authUser string, raw []byte) (*Message, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("reading the message: %w", err)
	}
	m := &Message{
		From: from, To: append([]string(nil), to...), AuthUser: authUser,
		Header: msg.Header, Raw: raw, Received: time.Now(),
	}
	var dec mime.WordDecoder
	m.Subject = msg.Header.Get("Subject")
	if s, err := dec.DecodeHeader(m.Subject); err == nil {
		m.Subject = s
	}
	if err := m.walk(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), "", msg.Body); err != nil {
		return nil, err
	}
	return m, nil
}

// walk reads one entity (the message, or a part of it), descending into
// multiparts, and keeps the first text and HTML bodies.
func (m *Message) walk(contentType, encoding, disposition string, body io.Reader) error {
	if contentType == "" {
		contentType = "text/plain"
	}
	media, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return fmt.Errorf("content type %q: %w", contentType, err)
	}
	if strings.HasPrefix(media, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			// NextRawPart: the decoding below is ours, for every encoding.
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("multipart: %w", err)
			}
			if err := m.walk(p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"),
				p.Header.Get("Content-Disposition"), p); err != nil {
				return err
			}
		}
	}
	if d, _, _ := mime.ParseMediaType(disposition); d == "attachment" {
		return nil
	}
	if media != "text/plain" && media != "text/html" {
		return nil
	}
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, body) // skips \r and \n
	}
	text, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("%s body (%s): %w", media, encoding, err)
	}
	if media == "text/plain" && m.Text == "" {
		m.Text = string(text)
	}
	if media == "text/html" && m.HTML == "" {
		m.HTML = string(text)
	}
	return nil
}
