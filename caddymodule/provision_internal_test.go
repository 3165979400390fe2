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

	"github.com/caddyserver/caddy/v2"
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
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	a := &App{Redis: closedRedisURL(t), Database: filepath.Join(dir, "ledger.db"), SpoolDir: filepath.Join(dir, "spool")}
	if err := a.Provision(ctx); err != nil {
		t.Fatalf("provision: %v", err)
	}
	defer a.Cleanup()
	err := a.Start()
	if err == nil {
		_ = a.Stop()
		t.Fatal("the app started with its redis down")
	}
	if !strings.Contains(err.Error(), "redis") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("start error %q: want it to say redis cannot be reached", err)
	}
}
