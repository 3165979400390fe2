// Command aitbench measures what the aitoken handler costs: one caddy
// process serves a bare reverse_proxy site and an aitoken site in front of
// the same reverse_proxy, both to the same mock provider (a separate
// process), and every comparison alternates between the two sites in one
// run, so that background load on the machine hits both alike. It prints a
// table against the project's performance bars and writes it, with the
// machine and the method, to docs/benchmarks.md.
//
//	go run ./cmd/aitbench            # full run, about 2 minutes on 2 cores
//	go run ./cmd/aitbench -quick     # smoke run
//
// It builds ./internal/testcaddy and ./cmd/mockupstream, and starts its own
// redis-server (internal/testredis), all on free loopback ports. Linux only
// (it reads /proc for CPU time).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

// config is the run's settings (the command's flags).
type config struct {
	// Duration is one throughput window.
	Duration time.Duration
	// Rounds is how many windows each site gets.
	Rounds int
	// Concurrency is the number of closed-loop clients in a window.
	Concurrency int
	// StreamConcurrency is the number of SSE streams in flight in a
	// streamed throughput window.
	StreamConcurrency int
	// Warmup is how long each site is loaded before measuring.
	Warmup time.Duration
	// Customers is how many customers the many-customer scenario mints
	// (0 skips it); CustomerRounds is how many windows each site gets in
	// it.
	Customers, CustomerRounds int
	// LatencyRequests is the number of sequential requests per site.
	LatencyRequests int
	// SSEStreams is the number of streams per site; SSEConcurrency of them
	// run at once, each of SSEDeltas deltas SSEDelay apart.
	SSEStreams, SSEConcurrency, SSEDeltas int
	SSEDelay                              time.Duration
	// OpenStreams is how many streams are held open for the memory
	// figure, MemRounds times per site.
	OpenStreams, MemRounds int
	// LedgerRecords is how many usage records the flush benchmark moves.
	LedgerRecords int
	// Out is the Markdown report ("" for none).
	Out string
	// Caddy is a prebuilt caddy binary with our modules ("" builds one).
	Caddy string
	// CPUProfile, when set, receives a CPU profile of caddy under
	// aitoken load, ProfileTime long.
	CPUProfile  string
	ProfileTime time.Duration
	// ProfileStreams profiles SSE streams instead of JSON requests.
	ProfileStreams bool
	// ProfileCustomers profiles with the minted customers' keys in turn.
	ProfileCustomers bool
	// ProfileBare profiles bare reverse_proxy instead, for comparison.
	ProfileBare bool
	// Quick marks a smoke run (in the report).
	Quick bool
	// Keep leaves the temporary directory (Caddyfile, caddy.log) in place.
	Keep bool
}

func main() {
	cfg, strict := parseFlags(os.Args[1:])
	log.SetFlags(0)
	log.SetPrefix("aitbench: ")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, cfg, os.Stderr)
	if err != nil {
		log.Fatal(err)
	}
	rows := res.rows()
	fmt.Println()
	writeTable(os.Stdout, rows)
	fmt.Printf("\nJSON throughput by round, one customer: %s\n", roundsLine(res.json.rounds))
	if res.customers > 0 {
		fmt.Printf("JSON throughput by round, %s: %s\n", res.customersLabel(), roundsLine(res.many.rounds))
	}
	fmt.Printf("Redis round trips per aitoken request, one customer: %s; scripts %.3f\n",
		opsLine(res.json.rt.ops), res.json.scriptsPer)
	if res.customers > 0 {
		fmt.Printf("Redis round trips per aitoken request, %s: %s; scripts %.3f\n",
			res.customersLabel(), opsLine(res.many.rt.ops), res.many.scriptsPer)
		fmt.Printf("minting the %s took %s\n", res.customersLabel(), res.setup.Round(time.Millisecond))
	}
	fmt.Printf("Redis round trips in the latency phase: %s\n", rttLine(res.rtt, res.latencyN))
	fmt.Printf("Redis round trips in the SSE phase: %s\n", rttLine(res.sseRTT, res.streams[metered]))
	st := res.streamed
	fmt.Printf("streamed throughput: mean time per stream bare %.1f ms, aitoken %.1f ms; all processes used %.2f and %.2f of %d cores\n",
		st.streamMs[bare], st.streamMs[metered], st.cores[bare], st.cores[metered], runtime.NumCPU())
	if res.out != "" {
		fmt.Printf("\nwrote %s\n", res.out)
	}
	if strict {
		for _, r := range rows {
			if r.verdict == "FAIL" {
				os.Exit(1)
			}
		}
	}
}

// mintConcurrency is how many customers are minted at once.
const mintConcurrency = 16

// parseFlags reads the flags; -quick changes the defaults of the flags not
// given explicitly.
func parseFlags(args []string) (config, bool) {
	var c config
	fs := flag.NewFlagSet("aitbench", flag.ExitOnError)
	fs.DurationVar(&c.Duration, "duration", 2*time.Second, "length of one throughput window")
	fs.IntVar(&c.Rounds, "rounds", 10, "throughput windows per site (alternating bare/aitoken)")
	fs.IntVar(&c.Concurrency, "concurrency", 16, "closed-loop clients in a throughput window")
	fs.IntVar(&c.StreamConcurrency, "stream-concurrency", 16, "SSE streams in flight in a streamed throughput window (the default leaves a 2-core machine unsaturated)")
	fs.IntVar(&c.Customers, "customers", 1000, "customers minted for the many-customer JSON throughput scenario, their keys used round-robin (0 skips it)")
	fs.IntVar(&c.CustomerRounds, "customer-rounds", 5, "throughput windows per site in the many-customer scenario")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "load per site before measuring")
	fs.IntVar(&c.LatencyRequests, "latency-requests", 4000, "sequential requests per site for latency")
	fs.IntVar(&c.SSEStreams, "sse-streams", 300, "SSE streams per site")
	fs.IntVar(&c.SSEConcurrency, "sse-concurrency", 8, "SSE streams in flight")
	fs.IntVar(&c.SSEDeltas, "sse-deltas", 20, "content deltas per SSE stream (X-Mock-Deltas)")
	fs.DurationVar(&c.SSEDelay, "sse-delay", 2*time.Millisecond, "pause between SSE deltas (X-Mock-Delay)")
	fs.IntVar(&c.OpenStreams, "streams", 500, "streams held open for the memory figure")
	fs.IntVar(&c.MemRounds, "mem-rounds", 2, "memory measurements per site")
	fs.IntVar(&c.LedgerRecords, "ledger-records", 100_000, "usage records for the ledger flush rate")
	fs.StringVar(&c.Out, "out", "docs/benchmarks.md", "Markdown report, relative to the module root; empty for none")
	fs.StringVar(&c.Caddy, "caddy", "", "prebuilt caddy binary with the aitoken modules (default: build ./internal/testcaddy)")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of caddy under aitoken load to this file (and its allocations to FILE.allocs)")
	fs.DurationVar(&c.ProfileTime, "profile-time", 10*time.Second, "length of the -cpuprofile load")
	fs.BoolVar(&c.ProfileBare, "profile-bare", false, "profile the bare reverse_proxy site instead of the aitoken one (a baseline for -cpuprofile)")
	fs.BoolVar(&c.ProfileCustomers, "profile-customers", false, "profile with the -customers keys used round-robin instead of one customer's")
	fs.BoolVar(&c.ProfileStreams, "profile-streams", false, "profile SSE streams (-stream-concurrency in flight) instead of JSON requests")
	fs.BoolVar(&c.Quick, "quick", false, "smoke run: short windows, few requests (numbers are rough)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the temporary directory (Caddyfile, caddy.log) and print its path")
	strict := fs.Bool("strict", false, "exit with status 1 when a target is missed")
	_ = fs.Parse(args)
	if c.Quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range map[string]string{
			"duration": "400ms", "rounds": "2", "customer-rounds": "1", "warmup": "300ms", "latency-requests": "300",
			"sse-streams": "40", "stream-concurrency": "16", "streams": "100", "mem-rounds": "1", "ledger-records": "10000",
		} {
			if !set[name] {
				_ = fs.Set(name, v)
			}
		}
	}
	return c, *strict
}

// run starts the processes, measures, writes the report to cfg.Out (when
// set) and returns the results; progress goes to logw.
func run(ctx context.Context, cfg config, logw io.Writer) (*results, error) {
	begun := time.Now()
	logf := func(format string, args ...any) { fmt.Fprintf(logw, "aitbench: "+format+"\n", args...) }
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	if cfg.Out != "" && !filepath.IsAbs(cfg.Out) {
		cfg.Out = filepath.Join(root, cfg.Out)
	}
	dir, err := os.MkdirTemp("", "aitbench-")
	if err != nil {
		return nil, err
	}
	if cfg.Keep {
		logf("keeping %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	logf("building caddy (./internal/testcaddy) and the mock upstream")
	caddyPath, mockPath, err := build(root, dir, cfg.Caddy)
	if err != nil {
		return nil, err
	}
	e, err := startEnv(ctx, dir, caddyPath, mockPath)
	defer e.close()
	if err != nil {
		return nil, err
	}
	res := &results{}
	if cfg.Customers > 0 {
		logf("minting %d customers through the admin API", cfg.Customers)
		t := time.Now()
		if e.customers, err = e.mintCustomers(ctx, cfg.Customers, mintConcurrency); err != nil {
			return nil, fmt.Errorf("minting customers: %v%s", err, e.logTail())
		}
		res.setup = time.Since(t)
		logf("minted %d customers in %s", cfg.Customers, res.setup.Round(time.Millisecond))
	}
	if err := measure(ctx, cfg, e, res, logf); err != nil {
		return nil, fmt.Errorf("%v%s", err, e.logTail())
	}
	e.stopCaddy()

	logf("ledger: flushing %d usage records from Redis to SQLite", cfg.LedgerRecords)
	if res.flushRate, err = ledgerFlush(ctx, e.redis.Addr, dir, cfg.LedgerRecords); err != nil {
		return nil, err
	}
	res.elapsed = time.Since(begun)
	if cfg.Out != "" {
		if err := writeReport(cfg, res); err != nil {
			return nil, err
		}
		res.out = cfg.Out
	}
	return res, nil
}
