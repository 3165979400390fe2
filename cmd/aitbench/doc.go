package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

// writeReport writes the Markdown report: machine, results table, method.
func writeReport(cfg config, res *results) error {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Benchmarks")
	w("")
	w("Written by `make bench` (`go run ./cmd/aitbench`) on %s; the run took %s.",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), res.elapsed.Round(time.Second))
	if cfg.Quick {
		w("**This was a `-quick` smoke run: the numbers are rough.**")
	}
	w("The targets are the project's performance bars. Run it again with `make bench`; see `go run ./cmd/aitbench -h` for the flags.")
	w("")
	w("## Machine")
	w("")
	for _, line := range machine() {
		w("- %s", line)
	}
	if v := redisVersion(); v != "" {
		w("- Redis: %s", v)
	}
	w("")
	w("Other work may have been running on the machine at the same time: absolute figures are noisy;")
	w("the bare/aitoken comparisons are fair because they alternate within one run.")
	w("")
	w("## Results")
	w("")
	rows := res.rows()
	b.WriteString(markdownTable(rows))
	w("")
	w("Redis round trips per aitoken request, by operation: %s.", opsLine(res.rtOps))
	if res.rtt != nil {
		w("Mean request-path Redis round trip as the gateway timed it in the latency phase: authorize %.3f ms, settle %.3f ms.",
			res.rtt["authorize"], res.rtt["settle"])
	}
	w("Goroutines per open stream: bare %.2f, aitoken %.2f.",
		res.mem[bare].goroutinesPerStream, res.mem[metered].goroutinesPerStream)
	w("")
	writeNotes(&b, rows)
	w("")
	w("## Method")
	w("")
	w("One caddy process (`./internal/testcaddy`: the standard modules and ours) runs two sites on loopback")
	w("(the ports are free ones picked at each run):")
	w("")
	w("```caddyfile")
	w("# bare")
	w("http://127.0.0.1:8001 {")
	w("\troute /v1/* {")
	w("\t\treverse_proxy 127.0.0.1:8000 # the mock upstream")
	w("\t}")
	w("}")
	w("")
	w("# aitoken")
	w("http://127.0.0.1:8002 {")
	w("\troute /v1/* {")
	w("\t\taitoken")
	w("\t\treverse_proxy 127.0.0.1:8000")
	w("\t}")
	w("}")
	w("```")
	w("")
	w("with the `aitoken` app on a private redis-server (no persistence) and an SQLite ledger, so the")
	w("ledger flusher runs in caddy as in production. The upstream is `cmd/mockupstream`, a separate")
	w("process, as is the load generator (this command): caddy's CPU figure holds caddy alone. Every")
	w("request is `POST /v1/chat/completions` for `%s` with a valid key (the bare site ignores it);", benchModel)
	w("the bench user has a balance that the run cannot exhaust, and the key has no rate limits.")
	w("Keep-alive connections throughout (one pool per site, no compression). Before measuring, each")
	w("site is loaded for %s and a few streams are read.", cfg.Warmup)
	w("")
	w("- **JSON throughput**: JSON (non-stream) responses of 5 deltas. %d closed-loop clients; windows of",
		cfg.Concurrency)
	w("  %s alternate bare, aitoken, then aitoken, bare, … for %d rounds (%d windows per site). A",
		cfg.Duration, cfg.Rounds, cfg.Rounds)
	w("  window ends when its last request completes; req/s = a site's requests / its windows' time.")
	w("  Requests: bare %d, aitoken %d.", res.requests[bare], res.requests[metered])
	st := res.streamed
	w("- **streamed throughput**: %d closed-loop clients (a pool of %d connections per site), each",
		cfg.StreamConcurrency, cfg.StreamConcurrency)
	w("  reading one SSE stream to its end after the other, so %d streams are in flight; the mock", cfg.StreamConcurrency)
	w("  paces each stream like a model: a role chunk, then %d deltas with `X-Mock-Delay: %s`", cfg.SSEDeltas, cfg.SSEDelay)
	w("  before each after the first. After a %s window per site to open the connections, windows", cfg.Warmup/4)
	w("  of %s alternate between the sites for %d rounds exactly as for JSON; streams/s = a site's",
		cfg.Duration, cfg.Rounds)
	w("  streams / its windows' time. Streams: bare %d, aitoken %d; mean time per stream (in flight ×",
		st.streams[bare], st.streams[metered])
	w("  time / streams): bare %.1f ms, aitoken %.1f ms; all processes used on average %.2f (bare) and",
		st.streamMs[bare], st.streamMs[metered], st.cores[bare])
	w("  %.2f (aitoken) of the %d cores. Caddy's `reverse_proxy` keeps its default 32 idle upstream",
		st.cores[metered], runtime.NumCPU())
	w("  connections per host, alike on both sites.")
	w("- **latency**: %d requests per site, one at a time, alternating request by request (bare then",
		res.latencyN)
	w("  aitoken, then aitoken then bare); time from sending to the last body byte. Added = aitoken")
	w("  percentile − bare percentile. Right after, %d sequential PINGs from this process to the same", res.latencyN/2)
	w("  Redis (go-redis) give the machine's floor for one Redis round trip, which the aitoken route")
	w("  pays once before forwarding (authorize); the settlement's trip is off the client's path.")
	w("- **SSE**: %d streams per site, %d in flight, alternating bare/aitoken stream by stream; the",
		res.streams[bare], cfg.SSEConcurrency)
	w("  mock sends a role chunk, then %d deltas with `X-Mock-Delay: %s` before each after the first.",
		cfg.SSEDeltas, cfg.SSEDelay)
	w("  First byte: request sent to first body byte. Chunk gap: time between consecutive content")
	w("  deltas reaching the client (%d gaps per site); with no buffering it stays at the mock's delay.",
		res.gaps[bare])
	w("- **CPU per 1k requests**: utime+stime of the caddy process (`/proc/<pid>/stat`) over each site's")
	w("  throughput windows, divided by the requests served in them. The ledger flusher's work for the")
	w("  aitoken rows is in caddy too and is counted where it happens (mostly in aitoken windows).")
	w("  Redis: `used_cpu_user + used_cpu_sys` of INFO cpu over the aitoken windows per aitoken request.")
	w("  All processes: caddy + redis-server + mock upstream + the load generator. When the machine")
	w("  is saturated (the load runs on the same cores), the throughput ratio follows this figure.")
	w("  Caddy CPU per 1k streams: the same over the streamed throughput windows, per stream.")
	w("- **memory per open stream**: %d streams held open (`X-Mock-Hold: 1`: the mock stops after the",
		cfg.OpenStreams)
	w("  first delta until the client leaves); caddy's `go_memstats_heap_inuse_bytes +")
	w("  go_memstats_stack_inuse_bytes` (admin `/metrics`, after two forced GCs via")
	w("  `/debug/pprof/heap?gc=1`) minus the same figure just before opening them, divided by the")
	w("  number of streams; %d time(s) per site in the order bare, aitoken, aitoken, bare. Like every", cfg.MemRounds)
	w("  target it is judged against bare `reverse_proxy`: on the added amount. Caddy's own")
	w("  cost of a proxied stream, the bare column, is about a third `reverse_proxy`'s 32 KiB copy")
	w("  buffer; the rest is goroutine stacks and the client and upstream connections' buffers.")
	w("- **Redis round trips**: the gateway's `%s` (one per round trip, a", redisOpsMetric)
	w("  pipeline counting once) over the throughput phase, after every authorized request settled,")
	w("  divided by the aitoken requests. Request path: `authorize` + `settle`; all: every op")
	w("  (background flusher included) except `metrics`, the state gauges our own scrapes read.")
	w("  Cross-check: EVALSHA + EVAL calls in Redis `INFO commandstats` over the same span.")
	w("- **ledger flush**: in the harness process, %d records encoded as the gateway's settlement", cfg.LedgerRecords)
	w("  writes them (JSON of `usagelog.Record` in field `r`) are XADDed to `%s` (pipelined, not", billing.UsageStream)
	w("  timed) on a separate Redis database; then a `usagelog.Flusher` configured as the gateway's")
	w("  (group `ledger`, batch 1000) is started on a fresh SQLite file, and the time until the stream")
	w("  is empty (entries are deleted only after their transaction commits) gives rows/s. The row")
	w("  count in SQLite is checked afterwards.")
	w("")
	w("The two throughput rows measure different things. The JSON row uses a zero-latency mock with")
	w("%d clients on a small machine (%d cores), so it saturates the CPU and measures CPU cost per",
		cfg.Concurrency, runtime.NumCPU())
	w("request: caddy and Redis share the cores with the load generator and the mock, and the ratio")
	w("follows the CPU rows. The streamed row paces responses like a model does and measures whether")
	w("the gateway holds bare throughput at a fixed concurrency (%d streams in flight), chosen to", cfg.StreamConcurrency)
	w("leave a 2-core machine below saturation; with more streams in flight the cores fill up and the")
	w("ratio falls toward the CPU-bound one (`-stream-concurrency 64` shows it).")
	out := []byte(b.String())
	if err := os.MkdirAll(filepath.Dir(cfg.Out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(cfg.Out, out, 0o644)
}

// redisVersion is redis-server's version line, or "".
func redisVersion() string {
	out, err := exec.Command(testredis.Binary, "--version").Output()
	if err != nil {
		return ""
	}
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return ""
}
