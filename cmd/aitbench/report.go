package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// Targets: the project's performance bars (README, make bench).
const (
	targetRatio     = 0.95        // aitoken throughput / bare throughput
	targetAddedP50  = 0.2         // ms
	targetAddedP99  = 0.5         // ms
	targetStreamMem = 64 * 1024.0 // bytes added per open stream
	targetRoundTrip = 2.0         // Redis round trips per request, request path
	targetFlushRate = 50_000.0    // ledger rows per second
)

// pcts are the 50th and 99th percentiles of a set of durations, in ms.
type pcts struct{ p50, p99 float64 }

// percentiles returns the nearest-rank 50th and 99th percentiles in ms.
func percentiles(ds []time.Duration) pcts {
	if len(ds) == 0 {
		return pcts{math.NaN(), math.NaN()}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return float64(s[max(i, 0)]) / float64(time.Millisecond)
	}
	return pcts{at(0.50), at(0.99)}
}

// results is everything one run measured.
type results struct {
	throughput [2]float64 // requests per second
	requests   [2]int64   // requests in the throughput windows
	latency    [2]pcts
	latencyN   int
	ttfb       [2]pcts
	gap        [2]pcts
	streams    [2]int
	gaps       [2]int
	cpuPer1k   [2]float64 // caddy CPU ms per 1000 requests
	redisPer1k float64    // redis-server CPU ms per 1000 aitoken requests
	totalPer1k [2]float64 // CPU ms of every process per 1000 requests
	mem        [2]memResult
	rtRequest  float64 // NaN: the gateway exports no round-trip metric
	rtAll      float64
	rtOps      map[string]float64 // round trips per aitoken request, by op
	rtt        map[string]float64 // mean round-trip ms in the latency phase, by op
	ping       pcts               // Redis PING round trip from the load generator: the machine's floor
	scriptsPer float64            // EVALSHA+EVAL calls per aitoken request
	flushRate  float64            // ledger rows per second
	streamed   streamedResult     // streamed throughput phase
	elapsed    time.Duration
	out        string // the report written, if any
}

// row is one line of the results table.
type row struct {
	metric, bare, aitoken, added, target, verdict string
}

func verdict(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}

func num(v float64, prec int) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func signed(v float64, prec int) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%+.*f", prec, v)
}

// rows turns the results into the table, in a fixed order.
func (r *results) rows() []row {
	ratio := r.throughput[metered] / r.throughput[bare]
	added := func(name string, p [2]pcts, unit string) []row {
		d50, d99 := p[metered].p50-p[bare].p50, p[metered].p99-p[bare].p99
		return []row{
			{name + " p50, " + unit, num(p[bare].p50, 3), num(p[metered].p50, 3), signed(d50, 3),
				fmt.Sprintf("≤ +%.1f ms", targetAddedP50), verdict(d50 <= targetAddedP50)},
			{name + " p99, " + unit, num(p[bare].p99, 3), num(p[metered].p99, 3), signed(d99, 3),
				fmt.Sprintf("≤ +%.1f ms", targetAddedP99), verdict(d99 <= targetAddedP99)},
		}
	}
	st := r.streamed
	sRatio := st.rate[metered] / st.rate[bare]
	rows := []row{
		{"throughput, JSON req/s (CPU-bound)", num(r.throughput[bare], 0), num(r.throughput[metered], 0),
			fmt.Sprintf("%.1f %%", 100*ratio), fmt.Sprintf("≥ %.0f %%", 100*targetRatio), verdict(ratio >= targetRatio)},
		{"throughput, SSE streams/s", num(st.rate[bare], 0), num(st.rate[metered], 0),
			fmt.Sprintf("%.1f %%", 100*sRatio), fmt.Sprintf("≥ %.0f %%", 100*targetRatio), verdict(sRatio >= targetRatio)},
	}
	rows = append(rows, added("latency", r.latency, "ms")...)
	rows = append(rows, added("SSE first byte", r.ttfb, "ms")...)
	rows = append(rows, added("SSE chunk gap", r.gap, "ms")...)
	cpuAdded := r.cpuPer1k[metered] - r.cpuPer1k[bare]
	totalAdded := r.totalPer1k[metered] - r.totalPer1k[bare]
	streamCPUAdded := st.cpuPer1k[metered] - st.cpuPer1k[bare]
	memAdded := r.mem[metered].bytesPerStream - r.mem[bare].bytesPerStream
	rtVerdict := "n/a"
	if !math.IsNaN(r.rtRequest) {
		rtVerdict = verdict(r.rtRequest <= targetRoundTrip+0.005)
	}
	rows = append(rows,
		row{"caddy CPU per 1k req, ms", num(r.cpuPer1k[bare], 1), num(r.cpuPer1k[metered], 1),
			fmt.Sprintf("%s (×%.2f)", signed(cpuAdded, 1), r.cpuPer1k[metered]/r.cpuPer1k[bare]), "—", "info"},
		row{"Redis CPU per 1k req, ms", "—", num(r.redisPer1k, 1), "—", "—", "info"},
		row{"all processes' CPU per 1k req, ms", num(r.totalPer1k[bare], 1), num(r.totalPer1k[metered], 1),
			fmt.Sprintf("%s (×%.2f)", signed(totalAdded, 1), r.totalPer1k[metered]/r.totalPer1k[bare]), "—", "info"},
		row{"caddy CPU per 1k streams, ms", num(st.cpuPer1k[bare], 1), num(st.cpuPer1k[metered], 1),
			fmt.Sprintf("%s (×%.2f)", signed(streamCPUAdded, 1), st.cpuPer1k[metered]/st.cpuPer1k[bare]), "—", "info"},
		row{"memory per open stream, KiB", num(r.mem[bare].bytesPerStream/1024, 1), num(r.mem[metered].bytesPerStream/1024, 1),
			signed(memAdded/1024, 1), fmt.Sprintf("≤ +%.0f KiB", targetStreamMem/1024), verdict(memAdded <= targetStreamMem)},
		row{"Redis PING round trip p50, ms (machine floor)", "—", num(r.ping.p50, 3), "—", "—", "info"},
		row{"Redis PING round trip p99, ms (machine floor)", "—", num(r.ping.p99, 3), "—", "—", "info"},
		row{"Redis round trips per req, request path", "—", num(r.rtRequest, 2), "—",
			fmt.Sprintf("≤ %.0f", targetRoundTrip), rtVerdict},
		row{"Redis round trips per req, all", "—", num(r.rtAll, 2), "—", "—", "info"},
		row{"Redis scripts per req (commandstats)", "—", num(r.scriptsPer, 2), "—", "—", "info"},
		row{"ledger flush, rows/s", "—", num(r.flushRate, 0), "—",
			fmt.Sprintf("≥ %.0f", targetFlushRate), verdict(r.flushRate >= targetFlushRate)},
	)
	return rows
}

var tableHeader = row{"metric", "bare", "aitoken", "added / ratio", "target", "result"}

// writeTable prints the table with aligned columns.
func writeTable(w io.Writer, rows []row) {
	all := append([]row{tableHeader}, rows...)
	var width [6]int
	for _, r := range all {
		for i, c := range r.cells() {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for i, r := range all {
		var b strings.Builder
		for j, c := range r.cells() {
			pad := width[j] - len([]rune(c))
			if j == 0 {
				b.WriteString(c + strings.Repeat(" ", pad))
			} else {
				b.WriteString("  " + strings.Repeat(" ", pad) + c)
			}
		}
		fmt.Fprintln(w, b.String())
		if i == 0 {
			fmt.Fprintln(w, strings.Repeat("-", len([]rune(b.String()))))
		}
	}
}

func (r row) cells() [6]string {
	return [6]string{r.metric, r.bare, r.aitoken, r.added, r.target, r.verdict}
}

// markdownTable renders the rows as a Markdown table.
func markdownTable(rows []row) string {
	var b strings.Builder
	h := tableHeader.cells()
	fmt.Fprintf(&b, "| %s |\n|---|--:|--:|--:|--:|---|\n", strings.Join(h[:], " | "))
	for _, r := range rows {
		c := r.cells()
		fmt.Fprintf(&b, "| %s |\n", strings.Join(c[:], " | "))
	}
	return b.String()
}

// machine describes where the run happened.
func machine() []string {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	osName := runtime.GOOS
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		osName += ", Linux " + strings.TrimSpace(string(b))
	}
	load := "unknown"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	return []string{
		"CPU: " + cpu,
		fmt.Sprintf("Cores: %d", runtime.NumCPU()),
		"Go: " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		"OS: " + osName,
		"Load average (1, 5, 15 min) when the report was written: " + load,
	}
}

// opsLine lists the round trips per aitoken request by op, largest first.
func opsLine(ops map[string]float64) string {
	if ops == nil {
		return "n/a (the gateway exports no " + redisOpsMetric + ")"
	}
	names := make([]string, 0, len(ops))
	for k := range ops {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		if ops[names[i]] != ops[names[j]] {
			return ops[names[i]] > ops[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %.3f", n, ops[n])
	}
	return strings.Join(parts, ", ")
}
