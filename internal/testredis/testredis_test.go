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

func TestStartWithArgs(t *testing.T) {
	s := StartWith(t, "--maxmemory", "12mb")
	reply, err := Do(s.Addr, "CONFIG", "GET", "maxmemory")
	if err != nil {
		t.Fatal(err)
	}
	if got := fields(reply)["maxmemory"]; got != "12582912" {
		t.Fatalf("maxmemory = %q, want 12582912", got)
	}
	s.Restart() // keeps the options
	reply, err = Do(s.Addr, "CONFIG", "GET", "maxmemory")
	if err != nil {
		t.Fatal(err)
	}
	if got := fields(reply)["maxmemory"]; got != "12582912" {
		t.Fatalf("after restart maxmemory = %q, want 12582912", got)
	}
}

func TestReplicaAndSentinel(t *testing.T) {
	master := Start(t)
	replica := StartReplica(t, master)
	if _, err := Do(master.Addr, "SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	WaitReplicated(t, master, replica)
	if v, err := Do(replica.Addr, "GET", "k"); err != nil || v != "v" {
		t.Fatalf("replica GET k = %v, %v; want v", v, err)
	}
	if _, err := Do(replica.Addr, "SET", "k", "w"); err == nil || !strings.Contains(err.Error(), "READONLY") {
		t.Fatalf("replica SET: err = %v, want READONLY", err)
	}

	sentinel := StartSentinel(t, "m", master, SentinelConfig{})
	if sentinel.Port == 6379 || sentinel.Port == 26379 {
		t.Fatalf("sentinel on default port %d", sentinel.Port)
	}
	reply, err := Do(sentinel.Addr, "SENTINEL", "DEBUG")
	if err != nil {
		t.Fatal(err)
	}
	if got := fields(reply); got["INFO-PERIOD"] != "1000" || got["TILT-PERIOD"] != "1000" {
		t.Fatalf("SENTINEL DEBUG = %v, want info-period and tilt-period 1000", got)
	}
	WaitSentinelReplicas(t, sentinel, "m", 1)
	addr, err := SentinelMasterAddr(sentinel.Addr, "m")
	if err != nil || addr != master.Addr {
		t.Fatalf("SentinelMasterAddr = %q, %v; want %q", addr, err, master.Addr)
	}
	if _, err := SentinelMasterAddr(sentinel.Addr, "nope"); err == nil {
		t.Fatal("SentinelMasterAddr of an unknown master: no error")
	}
}
