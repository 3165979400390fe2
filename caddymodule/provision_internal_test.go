package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/caddyserver/caddy/v2"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

// closedRedisURL is a Redis URL on a loopback port nothing listens on.
func closedRedisURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "redis://" + addr + "/0"
}

// TestValidateTouchesNothing validates a ledger node's config (app, metering
// handler, Stripe webhook) whose Redis is down and whose database and spool
// directories do not exist yet: validation succeeds without dialing Redis
// and creates no file.
func TestValidateTouchesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	cfg := map[string]any{
		"admin": map[string]any{"disabled": true},
		"apps": map[string]any{
			"aitoken": map[string]any{
				"redis":     closedRedisURL(t),
				"database":  filepath.Join(dir, "db", "ledger.db"),
				"spool_dir": filepath.Join(dir, "spool"),
				"prices":    map[string]any{"m": map[string]any{"input": "1", "output": "2"}},
				"stripe":    map[string]any{"webhook_secret": "{env.AITOKEN_TEST_WHSEC}"},
			},
			"http": map[string]any{"servers": map[string]any{"s": map[string]any{
				"listen": []string{"127.0.0.1:0"},
				"routes": []any{
					map[string]any{"handle": []any{map[string]any{"handler": "aitoken_stripe"}}},
					map[string]any{"handle": []any{map[string]any{"handler": "aitoken"}}},
				},
			}}},
		},
	}
	t.Setenv("AITOKEN_TEST_WHSEC", "whsec_test")
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var c caddy.Config
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&c); err != nil {
		t.Fatalf("validate with redis down: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("validate created %s (stat: %v)", dir, err)
	}
}

// TestStartFailsOnUnreachableRedis: what validation skips, starting does,
// and a ledger node whose Redis is down does not start.
func TestStartFailsOnUnreachableRedis(t *testing.T) {
	dir := t.TempDir()
	a := provisioned(t, &App{Redis: closedRedisURL(t), Database: filepath.Join(dir, "ledger.db"), SpoolDir: filepath.Join(dir, "spool")})
	err := a.Start()
	if err == nil {
		_ = a.Stop()
		t.Fatal("the app started with its redis down")
	}
	if !strings.Contains(err.Error(), "redis") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("start error %q: want it to say redis cannot be reached", err)
	}
}

// A gateway node (no ledger) starts while its Redis is down, refuses
// requests until Redis answers, and then moves it to the current key
// layout before it touches an account.
func TestGatewayStartsWhileRedisIsDown(t *testing.T) {
	srv := testredis.Start(t)
	srv.Stop()
	a := provisioned(t, &App{Redis: srv.URL(), SpoolDir: filepath.Join(t.TempDir(), "spool")})
	if err := a.Start(); err != nil {
		t.Fatalf("a gateway node did not start with its redis down: %v", err)
	}
	defer a.Stop()
	if err := a.ready(); !errors.As(err, new(redisNotReady)) {
		t.Fatalf("ready with redis down: %v; want it not ready", err)
	}
	// A metrics scrape meanwhile has no settlement state to show, and
	// must not take the process down.
	ch := make(chan prometheus.Metric, 16)
	metrics.state.Collect(ch)
	if len(ch) != 0 {
		t.Fatalf("%d state samples before the node is ready", len(ch))
	}

	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for a.ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready 10s after redis came back: %v", a.ready())
		}
		time.Sleep(50 * time.Millisecond)
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	if v, err := rdb.Get(t.Context(), "ait:layout").Result(); err != nil || v != "2" {
		t.Fatalf("key layout %q, %v; want Redis moved to layout 2 once it answered", v, err)
	}
}

// A Redis that a newer version moved to a key layout this build does not
// know, or one whose keys refuse the move, fails the start, on a gateway
// node too, and is left as it is.
func TestStartRefusedByRedis(t *testing.T) {
	for _, tc := range []struct {
		name, key, value string
		want             func(error) bool
	}{
		{"newer layout", "ait:layout", "3", func(err error) bool { return errors.Is(err, billing.ErrNewerLayout) }},
		{"old stream of the wrong type", "ait:usage", "x", func(err error) bool {
			return redis.HasErrorPrefix(err, "WRONGTYPE") && !errors.As(err, new(redisNotReady))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testredis.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
			defer rdb.Close()
			if err := rdb.Set(t.Context(), tc.key, tc.value, 0).Err(); err != nil {
				t.Fatal(err)
			}
			a := provisioned(t, &App{Redis: srv.URL(), SpoolDir: filepath.Join(t.TempDir(), "spool")})
			err := a.Start()
			if err == nil {
				_ = a.Stop()
				t.Fatal("started")
			}
			if !tc.want(err) {
				t.Fatalf("start error %v", err)
			}
			if v, _ := rdb.Get(t.Context(), tc.key).Result(); v != tc.value {
				t.Fatalf("%s changed to %q", tc.key, v)
			}
		})
	}
}

// provisioned provisions a in a new Caddy context, cleaned up when the test
// ends.
func provisioned(t *testing.T, a *App) *App {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := a.Provision(ctx); err != nil {
		t.Fatalf("provision: %v", err)
	}
	t.Cleanup(func() { _ = a.Cleanup() })
	return a
}
