package main

import (
	"fmt"
	"strings"
)

// rowNote says, for an operator reading the report, what a row of the
// results table measures and, for a row with a target, why it can fall
// short of it.
type rowNote struct{ means, short string }

// Why the gateway's latency rows can exceed their targets: shared by the
// request and first-byte rows.
const latencyShort = "before forwarding, the gateway reads and parses the request body and makes one Redis " +
	"round trip (authorize: the key check, the rate windows and the hold, in one script); the Redis PING rows " +
	"give the machine's floor for that trip. A p99 also catches the scheduler of a busy machine (see the load " +
	"average above): compare it with the PING p99. Balance leases, planned, would take that round trip off " +
	"most requests (see the JSON throughput row)."

// rowNotes has a note for every row of results.rows(), by metric.
var rowNotes = map[string]rowNote{
	"throughput, JSON req/s (CPU-bound)": {
		means: "requests per second with zero-latency answers and every core busy: the share of bare " +
			"`reverse_proxy` throughput the gateway keeps when CPU is the limit. Real traffic is paced by the " +
			"model, as in the SSE row, and is rarely CPU-bound.",
		short: "each metered request does work bare `reverse_proxy` does not, on the same cores: before " +
			"forwarding, a Redis round trip to admit it (key check and hold); after it, the settlement's Redis " +
			"script and the ledger flusher's CPU (decoding the usage record and inserting it into SQLite). With " +
			"a zero-latency upstream and the load generator on the same cores, that CPU is the throughput lost " +
			"(compare the CPU rows). The planned fix is balance leases: a node takes a slice of an account's " +
			"balance from Redis once and admits the following requests against it in memory, settling in " +
			"batches, so most requests make no Redis round trip of their own.",
	},
	"throughput, SSE streams/s": {
		means: "streams per second at a fixed number in flight, each paced like a model's answer: the " +
			"throughput an operator sees when the model, not the CPU, is the limit.",
		short: "the machine ran out of CPU at this concurrency (other work, or more streams than its cores " +
			"serve): the ratio then falls toward the JSON row's, for its reasons. Run it again on a quiet " +
			"machine, or with fewer streams in flight (`-stream-concurrency`).",
	},
	"latency p50, ms": {
		means: "time from sending a request to its last byte, one request at a time (no queueing); added is " +
			"what the gateway adds to a typical request.",
		short: latencyShort,
	},
	"latency p99, ms": {
		means: "the same for the slowest 1 % of requests.",
		short: latencyShort,
	},
	"SSE first byte p50, ms": {
		means: "time from sending a streamed request to its first body byte: how long a chat user waits for " +
			"the first text, and what the gateway adds to it.",
		short: latencyShort,
	},
	"SSE first byte p99, ms": {
		means: "the same for the slowest 1 % of streams.",
		short: latencyShort,
	},
	"SSE chunk gap p50, ms": {
		means: "time between consecutive deltas of a stream reaching the client: it stays at the mock's pace " +
			"when nothing buffers the stream.",
		short: "the gateway held back chunks it should pass on at once: a regression of the metered writer, " +
			"to investigate before a release.",
	},
	"SSE chunk gap p99, ms": {
		means: "the same for the slowest 1 % of gaps.",
		short: "as for the p50 row, unless the machine was busy (a p99 catches the scheduler): run it again " +
			"on a quiet machine first.",
	},
	"caddy CPU per 1k req, ms": {
		means: "caddy's CPU time per thousand JSON requests, the ledger flusher included: the gateway's CPU " +
			"cost per request, for sizing a node.",
	},
	"Redis CPU per 1k req, ms": {
		means: "redis-server's CPU time per thousand metered requests (the admission and settlement scripts, " +
			"the usage stream): for sizing Redis.",
	},
	"all processes' CPU per 1k req, ms": {
		means: "caddy, Redis, the mock and the load generator together per thousand requests: on a saturated " +
			"machine the JSON throughput ratio follows this figure.",
	},
	"caddy CPU per 1k streams, ms": {
		means: "caddy's CPU time per thousand paced streams.",
	},
	"memory per open stream, KiB": {
		means: "heap and stack caddy holds per open stream: what many idle, long generations cost in memory.",
		short: "the gateway keeps more per stream than it should: a regression; take a heap profile from the " +
			"admin listener's `/debug/pprof/heap` with streams open.",
	},
	"Redis PING round trip p50, ms (machine floor)": {
		means: "one Redis round trip from the load generator: the least the gateway's authorize trip can cost " +
			"on this machine.",
	},
	"Redis PING round trip p99, ms (machine floor)": {
		means: "the same for the slowest 1 %: how much the machine itself adds to tail latency.",
	},
	"Redis round trips per req, request path": {
		means: "Redis round trips per metered request on its own path: authorize and settle (a pipeline " +
			"counts once).",
		short: "requests make more Redis round trips than admission and settlement need: a regression; the " +
			"by-operation line under the table says which operation.",
	},
	"Redis round trips per req, all": {
		means: "the same with the background work (the ledger flusher's reads and acknowledgements) shared " +
			"out over the requests.",
	},
	"Redis scripts per req (commandstats)": {
		means: "script calls Redis itself counted per metered request: the cross-check of the round-trip rows " +
			"(two: authorize and settle).",
	},
	"ledger flush, rows/s": {
		means: "usage records per second the ledger flusher moves from the Redis stream into SQLite: how far " +
			"above the request rate the ledger node keeps up.",
		short: "SQLite wrote slowly on this disk (slow fsync, a shared or network disk): under that load the " +
			"stream backlog (`aitoken_usage_stream_lag`) would grow. Put the ledger on a local SSD.",
	},
}

// writeNotes writes, for an operator, what each row means and why each
// row under its target is there.
func writeNotes(b *strings.Builder, rows []row) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format+"\n", args...) }
	w("## Reading the results")
	w("")
	w("Bare is Caddy's `reverse_proxy` alone; aitoken is the same route metered. Targets are judged on")
	w("the added amount or the ratio; `info` rows have none.")
	w("")
	for _, r := range rows {
		w("- **%s**: %s", r.metric, rowNotes[r.metric].means)
	}
	w("")
	w("### Rows under their target")
	w("")
	var under []row
	for _, r := range rows {
		if r.verdict == "FAIL" {
			under = append(under, r)
		}
	}
	if len(under) == 0 {
		w("None: every row with a target met it.")
		return
	}
	said := map[string]string{} // a reason → the first row it was given for
	for _, r := range under {
		why := rowNotes[r.metric].short
		switch first, ok := said[why]; {
		case why == "":
			why = "no known cause: run it again on a quiet machine, then investigate."
		case ok:
			why = "as for **" + first + "** above."
		default:
			said[why] = r.metric
		}
		w("- **%s** (%s against a target of %s): %s", r.metric, r.added, r.target, why)
	}
}
