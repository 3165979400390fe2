package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// Targets: the project's performance bars (README, make bench), judged
// against bare reverse_proxy in the same run.
const (
	targetRatio       = 0.85        // JSON throughput, aitoken / bare, one customer
	targetRatioMany   = 0.80        // the same with many customers round-robin
	targetStreamRatio = 0.95        // model-paced streams, aitoken / bare
	targetAddedP50    = 0.1         // ms added: latency, SSE first byte and chunk gap
	targetAddedP99    = 0.3         // ms added: latency and SSE chunk gap
	targetStreamMem   = 64 * 1024.0 // bytes added per open stream
	targetRoundTrip   = 0.05        // Redis round trips per request on its path, returning customer
	targetFlushRate   = 50_000.0    // ledger rows per second
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
	json      jsonResult // JSON throughput, the bench customer alone
	many      jsonResult // JSON throughput, customers round-robin
	customers int        // customers in many (0: not run)
	latency   [2]pcts
	latencyN  int
	ttfb      [2]pcts
	gap       [2]pcts
	streams   [2]int
	gaps      [2]int
	mem       [2]memResult
	rtt       map[string]opTiming // Redis round trips in the latency phase, by op
	sseRTT    map[string]opTiming // the same in the SSE phase
	ping      pcts                // Redis PING round trip from the load generator: the machine's floor
	flushRate float64             // ledger rows per second
	streamed  streamedResult      // streamed throughput phase
	setup     time.Duration       // minting the customers
	elapsed   time.Duration
	out       string // the report written, if any
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

// thousands writes n with a comma between thousands: 1,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// customersLabel names the many-customer scenario in its rows.
func (r *results) customersLabel() string { return thousands(r.customers) + " customers" }

// rows turns the results into the table, in a fixed order.
func (r *results) rows() []row {
	// added is the p50 and p99 rows of a timing; a p99 target of NaN
	// makes the p99 row info.
	added := func(name string, p [2]pcts, t99 float64) []row {
		d50, d99 := p[metered].p50-p[bare].p50, p[metered].p99-p[bare].p99
		p99 := row{name + " p99, ms", num(p[bare].p99, 3), num(p[metered].p99, 3), signed(d99, 3), "—", "info"}
		if !math.IsNaN(t99) {
			p99.target, p99.verdict = fmt.Sprintf("≤ +%.1f ms", t99), verdict(d99 <= t99)
		}
		return []row{
			{name + " p50, ms", num(p[bare].p50, 3), num(p[metered].p50, 3), signed(d50, 3),
				fmt.Sprintf("≤ +%.1f ms", targetAddedP50), verdict(d50 <= targetAddedP50)},
			p99,
		}
	}
	ratioRow := func(name string, rate [2]float64, target float64, prec int) row {
		ratio := rate[metered] / rate[bare]
		return row{name, num(rate[bare], prec), num(rate[metered], prec), fmt.Sprintf("%.1f %%", 100*ratio),
			fmt.Sprintf("≥ %.0f %%", 100*target), verdict(ratio >= target)}
	}
	// serverRow is caddy's and Redis's CPU per request, µs.
	serverRow := func(name string, j jsonResult) row {
		b, a := j.serverPer1k(bare), j.serverPer1k(metered)
		return row{name, num(b, 1), num(a, 1), fmt.Sprintf("%s (×%.2f)", signed(a-b, 1), a/b), "—", "info"}
	}
	// pathRow is a request-path round-trip row, judged.
	pathRow := func(name string, rt roundTrips) row {
		v := "n/a"
		if !math.IsNaN(rt.requestPath) {
			v = verdict(rt.requestPath <= targetRoundTrip+1e-9)
		}
		return row{name, "—", num(rt.requestPath, 3), "—", fmt.Sprintf("≤ %.2f", targetRoundTrip), v}
	}
	info := func(name string, v float64, prec int) row {
		return row{name, "—", num(v, prec), "—", "—", "info"}
	}

	j, st := r.json, r.streamed
	rows := []row{ratioRow("throughput, JSON req/s (CPU-bound), one customer", j.throughput, targetRatio, 0)}
	if r.customers > 0 {
		rows = append(rows, ratioRow("throughput, JSON req/s (CPU-bound), "+r.customersLabel(), r.many.throughput, targetRatioMany, 0))
	}
	rows = append(rows, ratioRow("throughput, SSE streams/s", st.rate, targetStreamRatio, 0))
	rows = append(rows, added("latency", r.latency, targetAddedP99)...)
	rows = append(rows, added("SSE first byte", r.ttfb, math.NaN())...)
	rows = append(rows, added("SSE chunk gap", r.gap, targetAddedP99)...)
	cpuAdded := j.cpuPer1k[metered] - j.cpuPer1k[bare]
	totalAdded := j.totalPer1k[metered] - j.totalPer1k[bare]
	streamCPUAdded := st.cpuPer1k[metered] - st.cpuPer1k[bare]
	memAdded := r.mem[metered].bytesPerStream - r.mem[bare].bytesPerStream
	rows = append(rows,
		serverRow("caddy + Redis CPU per req, µs (one customer)", j))
	if r.customers > 0 {
		rows = append(rows, serverRow("caddy + Redis CPU per req, µs ("+r.customersLabel()+")", r.many))
	}
	rows = append(rows,
		row{"caddy CPU per 1k req, ms", num(j.cpuPer1k[bare], 1), num(j.cpuPer1k[metered], 1),
			fmt.Sprintf("%s (×%.2f)", signed(cpuAdded, 1), j.cpuPer1k[metered]/j.cpuPer1k[bare]), "—", "info"},
		row{"Redis CPU per 1k req, ms", num(j.redisPer1k[bare], 1), num(j.redisPer1k[metered], 1),
			signed(j.redisPer1k[metered]-j.redisPer1k[bare], 1), "—", "info"},
		row{"all processes' CPU per 1k req, ms", num(j.totalPer1k[bare], 1), num(j.totalPer1k[metered], 1),
			fmt.Sprintf("%s (×%.2f)", signed(totalAdded, 1), j.totalPer1k[metered]/j.totalPer1k[bare]), "—", "info"},
		row{"caddy CPU per 1k streams, ms", num(st.cpuPer1k[bare], 1), num(st.cpuPer1k[metered], 1),
			fmt.Sprintf("%s (×%.2f)", signed(streamCPUAdded, 1), st.cpuPer1k[metered]/st.cpuPer1k[bare]), "—", "info"},
		row{"memory per open stream, KiB", num(r.mem[bare].bytesPerStream/1024, 1), num(r.mem[metered].bytesPerStream/1024, 1),
			signed(memAdded/1024, 1), fmt.Sprintf("≤ +%.0f KiB", targetStreamMem/1024), verdict(memAdded <= targetStreamMem)},
		info("Redis PING round trip p50, ms (machine floor)", r.ping.p50, 3),
		info("Redis PING round trip p99, ms (machine floor)", r.ping.p99, 3),
		pathRow("Redis round trips per req, request path (authorize), one customer", j.rt),
	)
	if r.customers > 0 {
		rows = append(rows, pathRow("Redis round trips per req, request path (authorize), "+r.customersLabel(), r.many.rt))
	}
	rows = append(rows,
		info("Redis round trips per req, settle batches (after the response)", j.rt.op(billing.OpSettle), 4),
		info("Redis round trips per req, lease (background)", j.rt.op(billing.OpLease), 4),
		info("Redis round trips per req, all", j.rt.all, 3),
		info("Redis scripts per req (commandstats)", j.scriptsPer, 3),
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

// rttLine lists, by op, the Redis round trips the gateway made in a phase
// and their mean duration: the request path's first, then the others by
// name.
func rttLine(m map[string]opTiming, requests int) string {
	if m == nil {
		return "n/a (the gateway exports no " + redisOpsMetric + ")"
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	first := map[string]bool{}
	for _, op := range requestPathOps {
		first[op] = true
	}
	sort.Slice(names, func(i, j int) bool {
		if first[names[i]] != first[names[j]] {
			return first[names[i]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, 0, len(names))
	for _, n := range names {
		t := m[n]
		switch {
		case t.n == 0 && !first[n]:
			continue
		case t.n == 0:
			parts = append(parts, n+" 0")
		default:
			parts = append(parts, fmt.Sprintf("%s %.0f (mean %.3f ms)", n, t.n, t.meanMs))
		}
	}
	return fmt.Sprintf("%s, for %d aitoken requests", strings.Join(parts, ", "), requests)
}
