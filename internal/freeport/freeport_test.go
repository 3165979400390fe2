package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestPortFreeAndNeverTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p := For(t)
		if p == redisPort || seen[p] {
			t.Fatalf("port %d handed out (seen before: %v)", p, seen[p])
		}
		seen[p] = true
	}
	p := Must()
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("port %d is not free: %v", p, err)
	}
	l.Close()
}
