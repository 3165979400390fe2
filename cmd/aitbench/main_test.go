package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestQuickRun runs the whole harness in a reduced -quick mode (building
// caddy, starting Redis, the mock and caddy) and checks that the report has
// every row with numbers in it. It judges no performance target: it keeps
// the harness from rotting (a renamed metric, a changed admin API, a
// config caddy refuses all make it fail). AITBENCH_CADDY may name a
// prebuilt caddy (go build ./internal/testcaddy) to skip the build.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds caddy and runs real processes")
	}
	cfg, _ := parseFlags([]string{"-quick", "-duration", "250ms", "-rounds", "1", "-latency-requests", "200",
		"-sse-streams", "16", "-streams", "50", "-ledger-records", "5000"})
	cfg.Out = filepath.Join(t.TempDir(), "benchmarks.md")
	cfg.Caddy = os.Getenv("AITBENCH_CADDY") // a prebuilt binary saves the build
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log strings.Builder
	if _, err := run(ctx, cfg, &log); err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	b, err := os.ReadFile(cfg.Out)
	if err != nil {
		t.Fatal(err)
	}
	report := string(b)
	for _, s := range []string{"## Machine", "## Results", "## Method", "CPU: ", "Go: go",
		"**streamed throughput**", "**JSON throughput, 1,000 customers**", "The JSON and streamed throughput rows",
		"Warm-up: the bench customer was a returning one", "JSON throughput round by round", "waits until the gateway is quiet"} {
		if !strings.Contains(report, s) {
			t.Errorf("report lacks %q", s)
		}
	}

	// Every row, and whether its bare column holds a number.
	want := []struct {
		metric  string
		hasBare bool
	}{
		{"throughput, JSON req/s (CPU-bound), one customer", true},
		{"throughput, JSON req/s (CPU-bound), 1,000 customers", true},
		{"throughput, SSE streams/s", true},
		{"latency p50, ms", true},
		{"latency p99, ms", true},
		{"SSE first byte p50, ms", true},
		{"SSE first byte p99, ms", true},
		{"SSE chunk gap p50, ms", true},
		{"SSE chunk gap p99, ms", true},
		{"caddy + Redis CPU per req, µs (one customer)", true},
		{"caddy + Redis CPU per req, µs (1,000 customers)", true},
		{"caddy CPU per 1k req, ms", true},
		{"Redis CPU per 1k req, ms", true},
		{"all processes' CPU per 1k req, ms", true},
		{"caddy CPU per 1k streams, ms", true},
		{"memory per open stream, KiB", true},
		{"Redis PING round trip p50, ms (machine floor)", false},
		{"Redis PING round trip p99, ms (machine floor)", false},
		{"Redis round trips per req, request path (authorize), one customer", false},
		{"Redis round trips per req, request path (authorize), 1,000 customers", false},
		{"Redis round trips per req, settle batches (after the response)", false},
		{"Redis round trips per req, lease (background)", false},
		{"Redis round trips per req, all", false},
		{"Redis scripts per req (commandstats)", false},
		{"ledger flush, rows/s", false},
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(report, "\n") {
		if cells := strings.Split(strings.Trim(line, "| "), " | "); len(cells) == 6 {
			rows[cells[0]] = cells
		}
	}
	for _, w := range want {
		cells, ok := rows[w.metric]
		if !ok {
			t.Errorf("no row %q in the report table", w.metric)
			continue
		}
		check := func(col string, s string) float64 {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Errorf("row %q: %s column %q is not a number", w.metric, col, s)
			}
			return v
		}
		if w.hasBare {
			check("bare", cells[1])
		} else if cells[1] != "—" {
			t.Errorf("row %q: bare column %q, want —", w.metric, cells[1])
		}
		if v := check("aitoken", cells[2]); strings.HasPrefix(w.metric, "throughput") && v <= 0 {
			t.Errorf("row %q: aitoken throughput %v", w.metric, v)
		}
		if v := cells[5]; v != "pass" && v != "FAIL" && v != "info" {
			t.Errorf("row %q: result %q, want pass, FAIL or info", w.metric, v)
		}
	}
	if len(rows) != len(want)+1 { // + the header
		t.Errorf("report table has %d rows, want %d:\n%s", len(rows)-1, len(want), report)
	}
	// The round trips are counted: settlements reach Redis in batches of
	// one request or more, and every round trip is in the total.
	cell := func(metric string) float64 {
		v, _ := strconv.ParseFloat(rows[metric][2], 64)
		return v
	}
	settle, all := cell("Redis round trips per req, settle batches (after the response)"), cell("Redis round trips per req, all")
	if settle <= 0 || settle > 1 || all < settle {
		t.Errorf("settle batches %.3f per request (want in (0, 1]), all round trips %.3f", settle, all)
	}
	if v := cell("Redis scripts per req (commandstats)"); v <= 0 {
		t.Errorf("%.3f Redis scripts per aitoken request: settlements ran none", v)
	}
}
