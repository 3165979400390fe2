package caddymodule

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// unreachable returns a loopback address whose connection attempts go
// unanswered, as with a Redis host that is down or cut off (not refusing):
// a socket listening with the smallest backlog, filled, that never accepts.
// It skips the test where the kernel answers anyway.
func unreachable(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	for range 4 { // fill the accept queue
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		if c != nil {
			c.Close()
		}
		t.Skipf("cannot make an unanswering address here: dial %v", err)
	}
	return addr
}

// A Redis host that does not answer at all costs a request one dial
// timeout per attempt (2s, 2 attempts), not go-redis's default of five
// dials per attempt: the request's 503 comes within the bound.
func TestUnreachableRedisFailsWithinBound(t *testing.T) {
	addr := unreachable(t)
	rc, err := acquireRedis("redis://"+addr+"/0", nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.release()
	start := time.Now()
	_, err = billing.NewAccounts(rc.client).Authorize(context.Background(),
		billing.AuthRequest{KeyHash: billing.HashKey("sk-ait-x"), CheckOnly: true})
	elapsed := time.Since(start)
	if err == nil || isRefusal(err) {
		t.Fatalf("authorize against an unreachable redis: %v", err)
	}
	t.Logf("unreachable redis: %v after %s", err, elapsed)
	if bound := 2*redisDialTimeout + time.Second; elapsed > bound {
		t.Fatalf("unreachable redis answered after %s, bound %s", elapsed, bound)
	}
}
