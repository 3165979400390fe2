package usagelog

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

// openStore opens a fresh ledger in a temporary directory.
func openStore(tb testing.TB) *Store {
	tb.Helper()
	s, err := Open(filepath.Join(tb.TempDir(), "ledger.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// testRedis is a redis-server started for one test.
// startRedis starts a throwaway redis-server on a free local port (never
// 6379), without persistence, and stops it when the test ends.
func startRedis(tb testing.TB) (*redis.Client, *testredis.Server) {
	tb.Helper()
	srv := testredis.Start(tb)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	tb.Cleanup(func() { rdb.Close() })
	return rdb, srv
}

// rec returns a valid record with the given request ID, user and time.
func rec(id, user string, t time.Time) Record {
	return Record{
		RequestID:         id,
		Time:              t,
		User:              user,
		KeyID:             "k_" + user,
		Model:             "deepseek-v4-flash",
		Endpoint:          "/v1/chat/completions",
		Stream:            true,
		Status:            200,
		Outcome:           "ok",
		InputTokens:       1200,
		CachedInputTokens: 1000,
		OutputTokens:      350,
		ReasoningTokens:   100,
		Cost:              money.Nanos(123_456),
		Currency:          "USD",
		DurationMS:        900,
		TTFTMS:            120,
		ClientIP:          "203.0.113.7",
	}
}

// countRows returns the number of rows in table.
func countRows(tb testing.TB, s *Store, table string) int {
	tb.Helper()
	var n int
	if err := s.rd.QueryRow(fmt.Sprintf("SELECT COUNT(*) FROM %s", table)).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}
