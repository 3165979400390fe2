package main

import (
	"fmt"
	"regexp"
	"strings"
)

// rowNote says, for an operator reading the report, what a row of the
// results table measures and, for a row with a target, why it can fall
// short of it.
type rowNote struct{ means, short string }

// Why the gateway's latency rows can exceed their targets: shared by the
// request and first-byte rows.
const latencyShort = "before forwarding, the gateway reads and parses the request body, hashes the key and takes " +
	"the request's hold from the customer's balance lease in memory; a request it cannot admit that way (the " +
	"key record not cached or stale, a key with rpm/tpm limits, a balance too small to lease) makes one Redis " +
	"round trip (authorize), which the Redis PING rows give the floor of, and the by-operation lines under the " +
	"table count. A p99 also catches the scheduler of a busy machine (see the load average above): compare it " +
	"with the PING p99."

// Why the request-path round-trip rows can exceed their target.
const roundTripShort = "requests were admitted in Redis rather than from a balance lease: key records not " +
	"cached or gone stale (a minute after Redis confirmed them), keys with rpm/tpm limits, balances too small " +
	"to lease, or leases running out faster than their background refill. The warm-up and by-operation lines " +
	"under the table say how many."

// Why the JSON throughput rows can fall short: the CPU a metered request
// costs on top of bare.
const throughputShort = "each metered request does work bare `reverse_proxy` does not, on the same cores: reading " +
	"and parsing the request body, metering the response, writing the settlement ahead to the journal and " +
	"applying it in a background batch (under load a second's settlements, a Redis script per 256 of them), and the ledger flusher's CPU " +
	"(decoding the usage record and inserting it into SQLite). With a zero-latency upstream and the load " +
	"generator on the same cores, that CPU is the throughput lost: compare the caddy + Redis CPU rows, and " +
	"profile caddy under this load with `-cpuprofile`."

// noteKey is the rowNotes key of a metric: the number of customers
// replaced by N.
func noteKey(metric string) string {
	return customersRE.ReplaceAllString(metric, "N customers")
}

var customersRE = regexp.MustCompile(`[0-9][0-9,]* customers`)

// rowNotes has a note for every row of results.rows(), by noteKey.
var rowNotes = map[string]rowNote{
	"throughput, JSON req/s (CPU-bound), one customer": {
		means: "requests per second with zero-latency answers and every core busy, all from one returning " +
			"customer: the share of bare `reverse_proxy` throughput the gateway keeps when CPU is the limit. Real " +
			"traffic is paced by the model, as in the SSE row, and is rarely CPU-bound.",
		short: throughputShort,
	},
	"throughput, JSON req/s (CPU-bound), N customers": {
		means: "the same with the clients taking many customers' keys in turn: what per-customer state " +
			"(key records, balance leases, each customer's share of a settlement script) costs.",
		short: throughputShort + " With many customers a settlement script carries many leases, each with " +
			"a few settlements, and every customer's lease is renewed in the background.",
	},
	"throughput, SSE streams/s": {
		means: "streams per second at a fixed number in flight, each paced like a model's answer: the " +
			"throughput an operator sees when the model, not the CPU, is the limit.",
		short: "the machine ran out of CPU at this concurrency (other work, or more streams than its cores " +
			"serve): the ratio then falls toward the JSON row's, for its reasons. Run it again on a quiet " +
			"machine, or with fewer streams in flight (`-stream-concurrency`).",
	},
	"latency p50, ms": {
		means: "time from sending a request to its last byte, one request at a time (no queueing), from a " +
			"returning customer; added is what the gateway adds to a typical request.",
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
		means: "the same for the slowest 1 % of streams; not judged, since with several streams in flight on " +
			"a small machine it measures the scheduler (the latency p99 holds the tail target).",
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
	"caddy + Redis CPU per req, µs (one customer)": {
		means: "CPU time caddy and redis-server spent per JSON request in the one-customer windows, the " +
			"background work included (settlement batches, leases, the ledger flusher): what the gateway's " +
			"servers spend per request, added over bare.",
	},
	"caddy + Redis CPU per req, µs (N customers)": {
		means: "the same in the many-customer windows.",
	},
	"caddy CPU per 1k req, ms": {
		means: "caddy's CPU time per thousand JSON requests (one customer), the ledger flusher included: " +
			"for sizing a node.",
	},
	"Redis CPU per 1k req, ms": {
		means: "redis-server's CPU time per thousand requests (one customer): settlement batches, leases, " +
			"the usage stream; the bare column is what Redis does on its own. For sizing Redis.",
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
		means: "one Redis round trip from the load generator: the least a request admitted in Redis " +
			"(authorize) pays on this machine.",
	},
	"Redis PING round trip p99, ms (machine floor)": {
		means: "the same for the slowest 1 %: how much the machine itself adds to tail latency.",
	},
	"Redis round trips per req, request path (authorize), one customer": {
		means: "Redis round trips per metered request before its response (authorize), for a returning " +
			"customer: a request admitted from the node's balance lease makes none.",
		short: roundTripShort,
	},
	"Redis round trips per req, request path (authorize), N customers": {
		means: "the same in the many-customer windows.",
		short: roundTripShort,
	},
	"Redis round trips per req, settle batches (after the response)": {
		means: "settlement batches per request (one customer): applied in Redis after the response, one " +
			"pipeline per batch.",
	},
	"Redis round trips per req, lease (background)": {
		means: "balance lease round trips per request (one customer): taking, refilling, renewing and giving " +
			"back leases, in the background.",
	},
	"Redis round trips per req, all": {
		means: "every round trip of the gateway (one customer) shared out over the requests: the request " +
			"path, settlements, leases and the ledger flusher's reads and acknowledgements.",
	},
	"Redis scripts per req (commandstats)": {
		means: "script calls Redis itself counted per metered request (one customer): the cross-check of the " +
			"round-trip rows (settlement and lease scripts, and authorize when a request goes to Redis).",
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
		w("- **%s**: %s", r.metric, rowNotes[noteKey(r.metric)].means)
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
		why := rowNotes[noteKey(r.metric)].short
		switch first, ok := said[why]; {
		case why == "":
			why = "no known cause: run it again on a quiet machine, then investigate."
		case ok:
			why = "as for **" + first + "** above."
		default:
			said[why] = r.metric
		}
		got := r.added
		if got == "—" { // a row judged on its own value
			got = r.aitoken
		}
		w("- **%s** (%s against a target of %s): %s", r.metric, got, r.target, why)
	}
}
