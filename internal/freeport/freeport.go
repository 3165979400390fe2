// Package freeport finds free TCP ports on the loopback interface, for the
// tests, cmd/aitbench and cmd/freeport (scripts/run.sh) that start servers
// on them.
package freeport

import (
	"net"
	"sync"
)

// redisPort is Redis's default port, never handed out: a redis-server
// someone runs on it must not be mistaken for one a test started.
const redisPort = 6379

// used are the ports Port handed out, never handed out twice in a process.
var used sync.Map

// Port asks the kernel for a free loopback port that is not Redis's default
// and that this process has not been handed before.
func Port() (int, error) {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if port == redisPort {
			continue
		}
		if _, taken := used.LoadOrStore(port, true); !taken {
			return port, nil
		}
	}
}

// Must is Port for TestMain and the like: it panics if the kernel gives no port.
func Must() int {
	port, err := Port()
	if err != nil {
		panic(err)
	}
	return port
}

// TB is the part of testing.TB that For uses (so this package, which
// cmd/freeport links, does not import testing).
type TB interface {
	Helper()
	Fatal(args ...any)
}

// For is Port for a test: it fails t if the kernel gives no port.
func For(t TB) int {
	t.Helper()
	port, err := Port()
	if err != nil {
		t.Fatal(err)
	}
	return port
}
