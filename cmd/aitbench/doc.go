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
	w("JSON throughput round by round (aitoken's share of bare in the same round), one customer: %s.",
		roundsLine(res.json.rounds))
	if res.customers > 0 {
		w("%s: %s.", res.customersLabel(), roundsLine(res.many.rounds))
	}
	w("Redis round trips per aitoken request in the JSON throughput windows, by operation: one customer: %s",
		opsLine(res.json.rt.ops))
	w("(scripts per request, INFO commandstats: %.3f).", res.json.scriptsPer)
	if res.customers > 0 {
		w("%s: %s (scripts per request: %.3f).", res.customersLabel(), opsLine(res.many.rt.ops), res.many.scriptsPer)
	}
	w("Redis round trips the gateway made in the latency phase, by operation: %s.", rttLine(res.rtt, res.latencyN))
	w("In the SSE phase: %s.", rttLine(res.sseRTT, res.streams[metered]))
	w("Warm-up: the bench customer was a returning one after %d round(s) of requests (%d requests).",
		res.json.warm.rounds, res.json.warm.requests)
	if res.customers > 0 {
		w("The %s were minted in %s and were returning ones after %d round(s) of every key (%d requests;",
			res.customersLabel(), res.setup.Round(time.Millisecond), res.many.warm.rounds, res.many.warm.requests)
		w("the last round made %s request-path Redis round trips).", num(res.many.warm.last, 0))
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
	w("- **JSON throughput, one customer**: JSON (non-stream) responses of 5 deltas. %d closed-loop",
		cfg.Concurrency)
	w("  clients, all with the bench user's key; windows of %s alternate bare, aitoken, then aitoken,",
		cfg.Duration)
	w("  bare, … for %d rounds (%d windows per site). A window ends when its last request completes;",
		cfg.Rounds, cfg.Rounds)
	w("  req/s = a site's requests / its windows' time. After each window (of any kind, either site)")
	w("  the bench waits until the gateway is quiet: no settlement in flight and no usage record left")
	w("  in the Redis streams (all in the ledger). What caddy and Redis spent meanwhile, the work the")
	w("  window's requests left behind (lingering settlements, the ledger flusher), is added to the")
	w("  window's CPU; and since these windows keep the CPU busy, the window's time is stretched by the")
	w("  share that work adds to the window's CPU, as if it had run during the window. Without this it")
	w("  would fall into the next window, often the other site's. Requests: bare %d, aitoken %d.",
		res.json.requests[bare], res.json.requests[metered])
	if res.customers > 0 {
		w("- **JSON throughput, %s**: at setup, %d users are created through the admin API", res.customersLabel(), res.customers)
		w("  (%d at once), each credited %s and given a key. The clients take the keys in turn,", mintConcurrency, customerCredit)
		w("  round-robin, on both sites. Before measuring, every key is used once a round until a round")
		w("  makes no request-path Redis round trip: a customer's first requests may pay one (the first")
		w("  fetches the key record, the second asks for a balance lease in the background), so the")
		w("  figure is for returning customers. Then, right after, %d round(s) of %s windows per site as", cfg.CustomerRounds, cfg.Duration)
		w("  above, ending before the gateway's key records go stale (a minute after Redis confirmed")
		w("  them). Requests: bare %d, aitoken %d.", res.many.requests[bare], res.many.requests[metered])
	}
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
	w("  percentile − bare percentile. Before it, and before the SSE phase, the bench customer is")
	w("  made a returning one again (rounds of requests until one makes no request-path round trip),")
	w("  so that both measure requests admitted from a balance lease. Right after, %d sequential", res.latencyN/2)
	w("  PINGs from this process to the same Redis (go-redis) give the machine's floor for one Redis")
	w("  round trip, which a request admitted in Redis (authorize) pays before forwarding; settlements")
	w("  are off the client's path.")
	w("- **SSE**: %d streams per site, %d in flight, alternating bare/aitoken stream by stream; the",
		res.streams[bare], cfg.SSEConcurrency)
	w("  mock sends a role chunk, then %d deltas with `X-Mock-Delay: %s` before each after the first.",
		cfg.SSEDeltas, cfg.SSEDelay)
	w("  Each stream is read past `[DONE]` to the end of its body, as SDKs do, so that its connection")
	w("  carries the next stream (Go's client drops a connection whose body is closed unread, and the")
	w("  next stream would pay a new one). First byte: request sent to first body byte; its p99 is")
	w("  info, not judged: with %d streams in flight on %d cores it measures the scheduler (the latency",
		cfg.SSEConcurrency, runtime.NumCPU())
	w("  p99, one request at a time, holds the tail target). Chunk gap: time between consecutive content")
	w("  deltas reaching the client (%d gaps per site); with no buffering it stays at the mock's delay.",
		res.gaps[bare])
	w("- **CPU per 1k requests**: utime+stime of the caddy process (`/proc/<pid>/stat`) over each site's")
	w("  throughput windows, and after each until the gateway was quiet (see JSON throughput), divided")
	w("  by the requests served in them: the ledger flusher's work and the settlements are in it.")
	w("  Redis: `used_cpu_user + used_cpu_sys` of INFO cpu over the same spans per request (the bare")
	w("  column is what Redis does on its own). Caddy + Redis CPU per request,")
	w("  µs: the two summed, per scenario: what the gateway's servers spend on a request, added over bare.")
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
	w("  pipeline counting once), labelled by operation, over a scenario's throughput windows, after")
	w("  every authorized request settled, divided by the aitoken requests. Request path: the round")
	w("  trips made before the response, `authorize` (admission in Redis, which a request admitted")
	w("  from a balance lease skips). Off the request path: `settle` (settlement batches, applied")
	w("  after the response), `lease` (balance leases taken, refilled, renewed and given back in the")
	w("  background) and the ledger flusher's (labelled by command, e.g. `xreadgroup`). All: every")
	w("  op except `metrics`, the state gauges our own scrapes read. Cross-check: EVALSHA + EVAL calls")
	w("  in Redis `INFO commandstats` over the same span.")
	w("- **ledger flush**: in the harness process, %d records encoded as the gateway's settlement", cfg.LedgerRecords)
	w("  writes them (JSON of `usagelog.Record` in field `r`) are XADDed to their users' shards of the")
	w("  %d usage streams (pipelined, not timed) on a separate Redis database; then a", billing.UsageShards)
	w("  `usagelog.Flusher` configured as the gateway's (group `ledger`, batch 1000) is started on a")
	w("  fresh SQLite file, and the time until the streams are empty (entries are deleted only after")
	w("  their transaction commits) gives rows/s. The row")
	w("  count in SQLite is checked afterwards.")
	w("")
	w("The JSON and streamed throughput rows measure different things. The JSON rows use a zero-latency")
	w("mock with %d clients on a small machine (%d cores), so they saturate the CPU and measure CPU cost",
		cfg.Concurrency, runtime.NumCPU())
	w("per request: caddy and Redis share the cores with the load generator and the mock, and the ratio")
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
