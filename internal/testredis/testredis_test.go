package testredis

import (
	"strings"
	"testing"
)

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	if s.Port == 6379 {
		t.Fatal("used the default Redis port")
	}
	if want := "redis://" + s.Addr + "/0"; s.URL() != want {
		t.Fatalf("URL() = %q, want %q", s.URL(), want)
	}
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Fatalf("Addr = %q, want loopback", s.Addr)
	}
	if err := Ping(s.Addr); err != nil {
		t.Fatalf("ping: %v", err)
	}

	s.Kill()
	if s.Running() {
		t.Fatal("running after Kill")
	}
	if err := Ping(s.Addr); err == nil {
		t.Fatal("ping succeeded after Kill")
	}

	s.Restart()
	if err := Ping(s.Addr); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}

	s.Restart() // while running
	if err := Ping(s.Addr); err != nil {
		t.Fatalf("ping after second restart: %v", err)
	}

	s.Stop()
	s.Stop() // idempotent
	if err := Ping(s.Addr); err == nil {
		t.Fatal("ping succeeded after Stop")
	}
}

func TestParallelServersGetOwnPorts(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr == b.Addr {
		t.Fatalf("both servers on %s", a.Addr)
	}
}

func TestMissingBinary(t *testing.T) {
	old := Binary
	Binary = "redis-server-does-not-exist"
	defer func() { Binary = old }()
	_, err := StartDir(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "apt-get install redis-server") {
		t.Fatalf("err = %v, want install hint", err)
	}
}
