package e2e

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRedisErrorsStartAtZero: a node started on the Redis Debian ships
// (7.0, which refuses CLIENT SETINFO) with an empty script cache (every
// script answers NOSCRIPT once) serves, bills and flushes a request with
// aitoken_redis_errors_total still at zero: the alert on that counter
// fires on real failures only.
func TestRedisErrorsStartAtZero(t *testing.T) {
	db := newRedisDB(t)
	rdb := redisClient(db)
	defer rdb.Close()
	// This test's redis-server is ours alone: empty its script cache.
	if err := rdb.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, "metrics", true, db)
	startCaddy(t, n)
	user, key := account(t, n, "metrics@example.com", "1.00")
	hc := &http.Client{Timeout: 10 * time.Second}
	for _, stream := range []bool{false, true} {
		if res := chat(context.Background(), hc, n.siteURL(), key.Key, stream, nil); res.status != http.StatusOK || !res.complete {
			t.Fatalf("chat (stream %v): %d %v %s", stream, res.status, res.err, res.body)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(usageOf(t, n, user.ID)) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the usage rows did not reach the ledger")
		}
		time.Sleep(50 * time.Millisecond)
	}

	resp, err := http.Get(n.adminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var seen bool
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "aitoken_redis_duration_seconds_count") {
			seen = true // Redis round trips were measured
		}
		if !strings.HasPrefix(line, "aitoken_redis_errors_total") {
			continue
		}
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err != nil || v != 0 {
			t.Errorf("after a clean start: %s", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !seen {
		t.Fatal("no aitoken_redis_duration_seconds in /metrics: is the metrics registry wired?")
	}
}
