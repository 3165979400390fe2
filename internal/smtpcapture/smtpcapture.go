// Package smtpcapture is a real SMTP server on a free loopback port that
// keeps every message it is sent, for the tests of email flows. It speaks
// plain SMTP (no TLS, as on loopback) and accepts AUTH PLAIN and LOGIN,
// with any credentials unless the server is given some.
//
//	func TestSignupMail(t *testing.T) {
//		srv := smtpcapture.Start(t) // closed by t.Cleanup
//		// point the product's mailer at srv.Host:srv.Port, then:
//		msg := srv.Next(t, 10*time.Second)
//		link, ok := msg.FirstLink() // e.g. the sign-in link
//		...
//	}
package smtpcapture

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Host is the address the server listens on. net/smtp and go-mail send
// AUTH PLAIN without TLS only to a host named localhost or a loopback IP.
const Host = "127.0.0.1"

// maxMessage is the largest message the server accepts, in bytes.
const maxMessage = 10 << 20

// Server is a running SMTP server and the messages it has received.
type Server struct {
	// Addr is host:port; Host is always 127.0.0.1.
	Addr string
	Host string
	Port int

	user, pass string // required credentials; "" accepts any or none

	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	msgs  []*Message
	read  int           // messages handed out by Next/Wait
	added chan struct{} // closed and replaced when a message arrives
	done  bool
}

// Option changes a Server.
type Option func(*Server)

// WithAuth makes the server require AUTH with these credentials before
// MAIL FROM.
func WithAuth(user, pass string) Option {
	return func(s *Server) { s.user, s.pass = user, pass }
}

// New starts a server on a free loopback port. Close stops it.
func New(opts ...Option) (*Server, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(Host, "0"))
	if err != nil {
		return nil, err
	}
	s := &Server{
		Addr:  ln.Addr().String(),
		Host:  Host,
		Port:  ln.Addr().(*net.TCPAddr).Port,
		ln:    ln,
		conns: map[net.Conn]struct{}{},
		added: make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Start is New for a test: it fails tb if the server cannot listen, and
// closes it on tb.Cleanup.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s, err := New(opts...)
	if err != nil {
		tb.Fatalf("smtpcapture: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// URL returns smtp://host:port, for configurations that take one.
func (s *Server) URL() string { return "smtp://" + net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Close stops the server, drops open sessions and waits for them to end.
// The messages stay readable.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil
	}
	s.done = true
	err := s.ln.Close()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// Messages returns every message received so far, oldest first.
func (s *Server) Messages() []*Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Message(nil), s.msgs...)
}

// ErrClosed is returned by Wait when the server is closed and every
// message it received has been handed out.
var ErrClosed = errors.New("smtpcapture: server closed")

// Wait returns the next message not yet handed out by Wait or Next,
// waiting for one to arrive until ctx ends.
func (s *Server) Wait(ctx context.Context) (*Message, error) {
	for {
		s.mu.Lock()
		if s.read < len(s.msgs) {
			m := s.msgs[s.read]
			s.read++
			s.mu.Unlock()
			return m, nil
		}
		if s.done {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		added := s.added
		s.mu.Unlock()
		select {
		case <-added:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Next is Wait for a test: it fails tb if no message arrives in timeout.
func (s *Server) Next(tb testing.TB, timeout time.Duration) *Message {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	m, err := s.Wait(ctx)
	if err != nil {
		tb.Fatalf("smtpcapture: no message in %v: %v", timeout, err)
	}
	return m
}

func (s *Server) add(m *Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.added)
	s.added = make(chan struct{})
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				_ = c.Close()
			}()
			(&session{srv: s, conn: c}).run()
		}()
	}
}
