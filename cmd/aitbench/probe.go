package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// procStat returns two counters of /proc/<pid>/stat: fields a and b
// counted from 1, as proc(5) numbers them. The command name (field 2) is
// in parentheses and may hold spaces, so fields are counted after the
// last ')'.
func procStat(pid, a, b int) (int64, int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	i := strings.LastIndexByte(string(raw), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(raw[i+1:])) // f[0] is field 3
	if len(f) < max(a, b)-2 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	va, err1 := strconv.ParseInt(f[a-3], 10, 64)
	vb, err2 := strconv.ParseInt(f[b-3], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: fields %d and %d are not numbers", pid, a, b)
	}
	return va, vb, nil
}

// procCPU returns the user+system CPU time a process has used so far
// (utime and stime).
func procCPU(pid int) (time.Duration, error) {
	utime, stime, err := procStat(pid, 14, 15)
	return time.Duration(utime+stime) * time.Second / clockTicks, err
}

// procFaults returns how many page faults a process has taken so far,
// minor and major (minflt and majflt). On a virtual machine a fault can
// cost as much as a request's whole system-call work, so memory a process
// takes fresh shows here before it shows in a profile.
func procFaults(pid int) (int64, error) {
	minflt, majflt, err := procStat(pid, 10, 12)
	return minflt + majflt, err
}

// procSyscalls returns how many read and write system calls a process has
// made so far (syscr and syscw of /proc/<pid>/io; reads and writes of every
// kind, sockets and files alike).
func procSyscalls(pid int) ([2]int64, error) {
	var n [2]int64
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return n, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch name {
		case "syscr":
			n[0], err = strconv.ParseInt(v, 10, 64)
		case "syscw":
			n[1], err = strconv.ParseInt(v, 10, 64)
		}
		if err != nil {
			return n, fmt.Errorf("/proc/%d/io: %w", pid, err)
		}
	}
	return n, nil
}

// cpuTimes is the CPU time used so far by each process of a run.
type cpuTimes struct {
	caddy, redis, mock, harness time.Duration
}

func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{c.caddy - o.caddy, c.redis - o.redis, c.mock - o.mock, c.harness - o.harness}
}

func (c cpuTimes) add(o cpuTimes) cpuTimes {
	return cpuTimes{c.caddy + o.caddy, c.redis + o.redis, c.mock + o.mock, c.harness + o.harness}
}

func (c cpuTimes) total() time.Duration { return c.caddy + c.redis + c.mock + c.harness }

// cpuTimes reads the CPU time of caddy, redis-server, the mock upstream and
// this process (the load generator).
func (e *env) cpuTimes() (cpuTimes, error) {
	var c cpuTimes
	var err [4]error
	c.caddy, err[0] = procCPU(e.caddy.Process.Pid)
	c.redis, err[1] = redisCPU(e.redis.Addr)
	c.mock, err[2] = procCPU(e.mock.Process.Pid)
	c.harness, err[3] = procCPU(os.Getpid())
	return c, errors.Join(err[:]...)
}

// redisCPU returns the CPU time (user+system) the redis-server has used,
// from INFO cpu (getrusage, microsecond resolution).
func redisCPU(addr string) (time.Duration, error) {
	m, err := testredis.Info(addr, "cpu")
	if err != nil {
		return 0, err
	}
	var total float64
	for _, k := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, err := strconv.ParseFloat(m[k], 64)
		if err != nil {
			return 0, fmt.Errorf("INFO cpu: bad %s %q", k, m[k])
		}
		total += v
	}
	return time.Duration(total * float64(time.Second)), nil
}

// redisScriptCalls returns how many scripts the server has run so far
// (EVALSHA and EVAL calls in INFO commandstats).
func redisScriptCalls(addr string) (int64, error) {
	m, err := testredis.Info(addr, "commandstats")
	if err != nil {
		return 0, err
	}
	var n int64
	for _, k := range []string{"cmdstat_evalsha", "cmdstat_eval"} {
		for _, kv := range strings.Split(m[k], ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				c, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("INFO commandstats: bad %s", k)
				}
				n += c
			}
		}
	}
	return n, nil
}

// redisCommands returns, per command, how many calls the server has run
// so far and the microseconds they took (INFO commandstats).
func redisCommands(addr string) (map[string][2]int64, error) {
	m, err := testredis.Info(addr, "commandstats")
	if err != nil {
		return nil, err
	}
	out := make(map[string][2]int64, len(m))
	for k, v := range m {
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		var st [2]int64
		for _, kv := range strings.Split(v, ",") {
			field, num, _ := strings.Cut(kv, "=")
			i := map[string]int{"calls": 0, "usec": 1}
			if j, ok := i[field]; ok {
				if st[j], err = strconv.ParseInt(num, 10, 64); err != nil {
					return nil, fmt.Errorf("INFO commandstats: bad %s", k)
				}
			}
		}
		out[name] = st
	}
	return out, nil
}

// sample is one Prometheus sample: a metric name, its labels and value.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads caddy's admin /metrics in the Prometheus text format.
func (e *env) scrape(ctx context.Context) ([]sample, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", e.adminURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d", resp.StatusCode)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics parses the Prometheus text format: comment lines are
// skipped; a sample line is name{label="value",…} value [timestamp].
func parseMetrics(r io.Reader) ([]sample, error) {
	var out []sample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("metrics: bad line %q", line)
			}
			s.name, rest = line[:i], line[j+1:]
			parseLabels(line[i+1:j], s.labels)
		} else {
			var ok bool
			if s.name, rest, ok = strings.Cut(line, " "); !ok {
				return nil, fmt.Errorf("metrics: bad line %q", line)
			}
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: bad value in %q", line)
		}
		s.value = v
		out = append(out, s)
	}
	return out, sc.Err()
}

// parseLabels reads label="value" pairs (values may hold escaped quotes and
// commas) into m.
func parseLabels(s string, m map[string]string) {
	for s != "" {
		name, rest, ok := strings.Cut(s, "=")
		if !ok || !strings.HasPrefix(rest, `"`) {
			return
		}
		rest = rest[1:]
		var val strings.Builder
		i := 0
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				switch rest[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(rest[i])
				}
				continue
			}
			val.WriteByte(rest[i])
		}
		m[strings.TrimSpace(name)] = val.String()
		if i+1 >= len(rest) {
			return
		}
		s = strings.TrimPrefix(rest[i+1:], ",")
	}
}

// value returns the sum of the samples named name whose labels include
// every label in want, and whether there was any.
func value(ss []sample, name string, want map[string]string) (float64, bool) {
	var sum float64
	found := false
outer:
	for _, s := range ss {
		if s.name != name {
			continue
		}
		for k, v := range want {
			if s.labels[k] != v {
				continue outer
			}
		}
		sum += s.value
		found = true
	}
	return sum, found
}

// redisOpsMetric is the gateway's histogram of Redis round trips by op.
const redisOpsMetric = "aitoken_redis_duration_seconds_count"

// redisOpsTime is the total time of those round trips by op, in seconds.
const redisOpsTime = "aitoken_redis_duration_seconds_sum"

// redisOps returns the gateway's Redis round-trip counts by op; nil when
// the gateway does not export the metric.
func redisOps(ss []sample) map[string]float64 { return byOp(ss, redisOpsMetric) }

// byOp sums the samples named name by their op label; nil when there are
// none.
func byOp(ss []sample, name string) map[string]float64 {
	var m map[string]float64
	for _, s := range ss {
		if s.name == name {
			if m == nil {
				m = map[string]float64{}
			}
			m[s.labels["op"]] += s.value
		}
	}
	return m
}

// goMemory forces two garbage collections in caddy (the heap profile
// endpoint with gc=1 runs one) and returns the Go heap and stack memory in
// use after them, and the number of goroutines.
func (e *env) goMemory(ctx context.Context) (inuse, goroutines float64, err error) {
	for range 2 {
		req, err := http.NewRequestWithContext(ctx, "GET", e.adminURL+"/debug/pprof/heap?gc=1", nil)
		if err != nil {
			return 0, 0, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, 0, fmt.Errorf("GET /debug/pprof/heap: %d", resp.StatusCode)
		}
	}
	ss, err := e.scrape(ctx)
	if err != nil {
		return 0, 0, err
	}
	heap, ok1 := value(ss, "go_memstats_heap_inuse_bytes", nil)
	stack, ok2 := value(ss, "go_memstats_stack_inuse_bytes", nil)
	g, ok3 := value(ss, "go_goroutines", nil)
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, fmt.Errorf("/metrics lacks go_memstats_heap_inuse_bytes, go_memstats_stack_inuse_bytes or go_goroutines")
	}
	return heap + stack, g, nil
}

// counters are what a profile reads of caddy and Redis before and after
// its load: caddy's read and write system calls, page faults and metrics,
// and Redis's commands.
type counters struct {
	syscalls [2]int64
	faults   int64
	metrics  []sample
	commands map[string][2]int64
}

// counters reads the counters now.
func (e *env) counters(ctx context.Context) (counters, error) {
	var c counters
	var err error
	if c.syscalls, err = procSyscalls(e.caddy.Process.Pid); err != nil {
		return c, err
	}
	if c.faults, err = procFaults(e.caddy.Process.Pid); err != nil {
		return c, err
	}
	if c.metrics, err = e.scrape(ctx); err != nil {
		return c, err
	}
	c.commands, err = redisCommands(e.redis.Addr)
	return c, err
}

// logCounters logs what the load between c0 and c1 cost per job: caddy's
// system calls, allocations and GC cycles, and Redis's costliest commands.
func logCounters(c0, c1 counters, jobs int64, logf func(string, ...any)) {
	n := float64(jobs)
	metric := func(name string) float64 {
		v0, _ := value(c0.metrics, name, nil)
		v1, _ := value(c1.metrics, name, nil)
		return (v1 - v0) / n
	}
	logf("caddy per job: %.2f read and %.2f write system calls, %.3f page faults, %.0f bytes in %.1f heap allocations; %.2f GC cycles per 1,000 jobs",
		float64(c1.syscalls[0]-c0.syscalls[0])/n, float64(c1.syscalls[1]-c0.syscalls[1])/n, float64(c1.faults-c0.faults)/n,
		metric("go_memstats_alloc_bytes_total"), metric("go_memstats_mallocs_total"),
		1000*metric("go_gc_duration_seconds_count"))
	type cost struct {
		name        string
		calls, usec float64
	}
	var costs []cost
	for name, st := range c1.commands {
		if c := (cost{name, float64(st[0] - c0.commands[name][0]), float64(st[1] - c0.commands[name][1])}); c.calls > 0 {
			costs = append(costs, c)
		}
	}
	slices.SortFunc(costs, func(a, b cost) int { return cmp.Compare(b.usec, a.usec) })
	var top []string
	for _, c := range costs[:min(len(costs), 8)] {
		top = append(top, fmt.Sprintf("%s %.3f calls %.2f µs", c.name, c.calls/n, c.usec/n))
	}
	logf("Redis commands per job (INFO commandstats, by time): %s", strings.Join(top, ", "))
}
