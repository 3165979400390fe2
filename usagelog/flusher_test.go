package usagelog

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// The test stream and the field that holds a record.
const (
	testStream = "test:usage"
	testField  = "r"
)

// xadd writes records to the stream as producers do.
func xadd(tb testing.TB, rdb *redis.Client, recs ...Record) {
	tb.Helper()
	ctx := context.Background()
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, r := range recs {
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			p.XAdd(ctx, &redis.XAddArgs{Stream: testStream, Values: []any{testField, b}})
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func records(prefix string, n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = rec(fmt.Sprintf("%s-%04d", prefix, i), "u1", time.Now())
	}
	return recs
}

// assertStreamEmpty checks that every entry was acknowledged and deleted.
func assertStreamEmpty(tb testing.TB, rdb *redis.Client, group string) {
	tb.Helper()
	ctx := context.Background()
	if n := rdb.XLen(ctx, testStream).Val(); n != 0 {
		tb.Errorf("stream still holds %d entries", n)
	}
	p, err := rdb.XPending(ctx, testStream, group).Result()
	if err != nil {
		tb.Fatal(err)
	}
	if p.Count != 0 {
		tb.Errorf("%d entries still pending", p.Count)
	}
}

func TestFlusherMovesEachRecordOnce(t *testing.T) {
	ctx := context.Background()
	rdb, _ := startRedis(t)
	s := openStore(t)
	cfg := FlusherConfig{Streams: []string{testStream}, Field: testField, Group: "g", Consumer: "c1", Batch: 7}

	// Written before the group exists: must not be skipped.
	recs := records("a", 50)
	xadd(t, rdb, recs[:30]...)
	f := NewFlusher(rdb, s, cfg, nil)
	if err := f.ensureGroup(ctx); err != nil {
		t.Fatal(err)
	}
	xadd(t, rdb, recs[30:]...)

	// A previous run of consumer c1 read 10 entries and committed them to
	// SQLite, then crashed before XACK: they are pending and stored.
	streams, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: "g", Consumer: "c1", Streams: []string{testStream, ">"}, Count: 10, Block: -1,
	}).Result()
	if err != nil || len(streams[0].Messages) != 10 {
		t.Fatalf("pre-read: %v", err)
	}
	if _, err := s.InsertUsage(ctx, recs[:10]); err != nil {
		t.Fatal(err)
	}

	n, err := f.FlushNow(ctx)
	if err != nil || n != 50 {
		t.Fatalf("FlushNow = %d, %v; want 50 entries", n, err)
	}
	n, err = f.FlushNow(ctx)
	if err != nil || n != 0 {
		t.Fatalf("second FlushNow = %d, %v; want 0", n, err)
	}
	if got := countRows(t, s, "usage"); got != 50 {
		t.Errorf("usage has %d rows, want 50", got)
	}
	assertStreamEmpty(t, rdb, "g")

	got, err := s.ListUsage(ctx, UsageQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range got {
		seen[r.RequestID] = true
	}
	for _, r := range recs {
		if !seen[r.RequestID] {
			t.Errorf("record %s lost", r.RequestID)
		}
	}
}

func TestFlusherRejectsMalformedEntries(t *testing.T) {
	ctx := context.Background()
	rdb, _ := startRedis(t)
	s := openStore(t)
	core, logs := observer.New(zap.DebugLevel)
	f := NewFlusher(rdb, s, FlusherConfig{Streams: []string{testStream}, Field: testField, Group: "g", Consumer: "c1"}, zap.New(core))

	const secret = "sk-SECRET-do-not-log"
	noID := rec("", "u1", time.Now())
	noID.ClientIP = secret
	noIDJSON, _ := json.Marshal(noID)
	raws := []string{`{"request_id":"x1","cost":"` + secret, string(noIDJSON)}
	xadd(t, rdb, rec("good-1", "u1", time.Now()))
	for _, raw := range raws {
		rdb.XAdd(ctx, &redis.XAddArgs{Stream: testStream, Values: []any{testField, raw}})
	}
	rdb.XAdd(ctx, &redis.XAddArgs{Stream: testStream, Values: []any{"other", secret}})
	xadd(t, rdb, rec("good-2", "u1", time.Now()))

	n, err := f.FlushNow(ctx)
	if err != nil || n != 5 {
		t.Fatalf("FlushNow = %d, %v; want 5", n, err)
	}
	if got := countRows(t, s, "usage"); got != 2 {
		t.Errorf("usage has %d rows, want 2", got)
	}
	assertStreamEmpty(t, rdb, "g")

	rows, err := s.rd.Query("SELECT stream, raw, reason FROM usage_rejects ORDER BY entry_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var kept []string
	for rows.Next() {
		var stream, raw, reason string
		if err := rows.Scan(&stream, &raw, &reason); err != nil {
			t.Fatal(err)
		}
		if stream != testStream || reason == "" {
			t.Errorf("reject row: stream %q reason %q", stream, reason)
		}
		kept = append(kept, raw)
	}
	want := append(raws, `{"other":"`+secret+`"}`)
	if strings.Join(kept, "\n") != strings.Join(want, "\n") {
		t.Errorf("usage_rejects raw values:\n got %q\nwant %q", kept, want)
	}

	if logs.FilterMessageSnippet("rejected").Len() != 3 {
		t.Errorf("want 3 reject log lines, got %d", logs.FilterMessageSnippet("rejected").Len())
	}
	for _, e := range logs.All() {
		b, _ := json.Marshal(e.ContextMap())
		if strings.Contains(e.Message+string(b), secret) {
			t.Errorf("log line carries content: %s %s", e.Message, b)
		}
	}

	// Flushing again neither duplicates rejects nor fails.
	if n, err := f.FlushNow(ctx); err != nil || n != 0 {
		t.Errorf("second FlushNow = %d, %v", n, err)
	}
	if got := countRows(t, s, "usage_rejects"); got != 3 {
		t.Errorf("usage_rejects has %d rows, want 3", got)
	}
}

// Records settled together come as one entry, one record per line: each
// line is stored once (a replay of the entry adds nothing), and a bad line
// is kept in usage_rejects under its entry and line, its batch-mates
// stored.
func TestFlusherReadsBatchEntries(t *testing.T) {
	ctx := context.Background()
	rdb, _ := startRedis(t)
	s := openStore(t)
	cfg := FlusherConfig{Streams: []string{testStream}, Field: testField, BatchField: "rs", Group: "g", Consumer: "c1"}
	f := NewFlusher(rdb, s, cfg, nil)
	var lines []string
	for _, r := range records("b", 3) {
		b, _ := json.Marshal(r)
		lines = append(lines, string(b))
	}
	batch := strings.Join([]string{lines[0], `{"request_id":"bad"`, lines[1], lines[2]}, "\n")
	id := rdb.XAdd(ctx, &redis.XAddArgs{Stream: testStream, Values: []any{"rs", batch}}).Val()
	xadd(t, rdb, rec("single", "u1", time.Now()))

	if n, err := f.FlushNow(ctx); err != nil || n != 2 {
		t.Fatalf("FlushNow = %d, %v; want 2 entries", n, err)
	}
	if got := countRows(t, s, "usage"); got != 4 {
		t.Errorf("usage has %d rows, want the batch's 3 good records and the single one", got)
	}
	var entry, raw string
	if err := s.rd.QueryRow("SELECT entry_id, raw FROM usage_rejects").Scan(&entry, &raw); err != nil ||
		entry != id+"/2" || raw != `{"request_id":"bad"` {
		t.Errorf("reject = %q %q, %v; want %q and the bad line", entry, raw, err, id+"/2")
	}
	assertStreamEmpty(t, rdb, "g")

	// The same entry again (a replay): nothing new.
	rdb.XAdd(ctx, &redis.XAddArgs{Stream: testStream, Values: []any{"rs", batch}})
	if n, err := f.FlushNow(ctx); err != nil || n != 1 {
		t.Fatalf("FlushNow of the replay = %d, %v", n, err)
	}
	if got := countRows(t, s, "usage"); got != 4 {
		t.Errorf("usage has %d rows after the replay, want 4", got)
	}
}

func TestFlusherRunsAndStopDrains(t *testing.T) {
	ctx := context.Background()
	rdb, _ := startRedis(t)
	s := openStore(t)
	f := NewFlusher(rdb, s, FlusherConfig{Streams: []string{testStream}, Field: testField, Group: "g", Consumer: "c1",
		Interval: 50 * time.Millisecond, Batch: 100}, zap.NewNop())

	xadd(t, rdb, records("before", 120)...) // before Start: picked up from "0"
	f.Start()
	f.Start() // no second loop
	waitRows(t, s, 120)

	xadd(t, rdb, records("live", 250)...)
	waitRows(t, s, 370)

	// Records written just before Stop are stored by its drain.
	xadd(t, rdb, records("late", 500)...)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := f.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	if got := countRows(t, s, "usage"); got != 870 {
		t.Errorf("after Stop usage has %d rows, want 870", got)
	}
	assertStreamEmpty(t, rdb, "g")

	// Stopped means stopped: nothing moves until the next FlushNow.
	xadd(t, rdb, records("after", 3)...)
	time.Sleep(150 * time.Millisecond)
	if got := countRows(t, s, "usage"); got != 870 {
		t.Errorf("flusher still running after Stop: %d rows", got)
	}
	if err := f.Stop(sctx); err != nil { // a second Stop drains again
		t.Fatal(err)
	}
	if got := countRows(t, s, "usage"); got != 873 {
		t.Errorf("second Stop: %d rows, want 873", got)
	}
}

func TestFlusherClaimsIdleEntries(t *testing.T) {
	ctx := context.Background()
	rdb, _ := startRedis(t)
	s := openStore(t)

	// Consumer "dead" read entries and vanished.
	dead := NewFlusher(rdb, s, FlusherConfig{Streams: []string{testStream}, Field: testField, Group: "g", Consumer: "dead"}, nil)
	if err := dead.ensureGroup(ctx); err != nil {
		t.Fatal(err)
	}
	xadd(t, rdb, records("orphan", 25)...)
	if _, err := dead.read(ctx, ">", nil, -1); err != nil {
		t.Fatal(err)
	}

	f := NewFlusher(rdb, s, FlusherConfig{Streams: []string{testStream}, Field: testField, Group: "g", Consumer: "c1",
		Interval: 20 * time.Millisecond, Batch: 10}, nil)
	f.claimIdle = 100 * time.Millisecond
	f.Start()
	defer f.Stop(ctx)
	waitRows(t, s, 25)
	waitFor(t, func() bool { return rdb.XLen(ctx, testStream).Val() == 0 })
	assertStreamEmpty(t, rdb, "g")
}

func TestFlusherRecoversFromLostGroup(t *testing.T) {
	ctx := context.Background()
	rdb, _ := startRedis(t)
	s := openStore(t)
	f := NewFlusher(rdb, s, FlusherConfig{Streams: []string{testStream}, Field: testField, Group: "g", Consumer: "c1",
		Interval: 20 * time.Millisecond}, nil)
	f.Start()
	defer f.Stop(ctx)
	xadd(t, rdb, records("one", 5)...)
	waitRows(t, s, 5)

	// As after a Redis restart without persistence: stream and group gone.
	if err := rdb.Del(ctx, testStream).Err(); err != nil {
		t.Fatal(err)
	}
	xadd(t, rdb, records("two", 5)...)
	waitRows(t, s, 10)
}

func TestFlusherBacksOffWhileRedisIsDown(t *testing.T) {
	ctx := context.Background()
	rdb, tr := startRedis(t)
	s := openStore(t)
	core, logs := observer.New(zap.WarnLevel)
	f := NewFlusher(rdb, s, FlusherConfig{Streams: []string{testStream}, Field: testField, Group: "g", Consumer: "c1",
		Interval: 20 * time.Millisecond}, zap.New(core))
	f.Start()
	defer f.Stop(ctx)
	xadd(t, rdb, records("one", 5)...)
	waitRows(t, s, 5)

	tr.Kill()
	// Backoff 50ms, 100ms, … capped at 1s: consecutive failed attempts are
	// spaced at least 50ms apart, never a spin.
	waitFor(t, func() bool { return logs.FilterMessageSnippet("retrying").Len() >= 3 })
	attempts := logs.FilterMessageSnippet("retrying").All()
	for i := 1; i < len(attempts); i++ {
		if gap := attempts[i].Time.Sub(attempts[i-1].Time); gap < 50*time.Millisecond {
			t.Fatalf("retry %d came %v after the previous one", i, gap)
		}
	}

	tr.Restart() // restarted empty, as without persistence
	xadd(t, rdb, records("two", 5)...)
	waitRows(t, s, 10)
}

func waitRows(tb testing.TB, s *Store, want int) {
	tb.Helper()
	waitFor(tb, func() bool { return countRows(tb, s, "usage") >= want })
	if got := countRows(tb, s, "usage"); got != want {
		tb.Fatalf("usage has %d rows, want %d", got, want)
	}
}

func waitFor(tb testing.TB, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkFlush measures the flusher end to end, Redis stream to SQLite,
// in 1000-entry batches (10 per FlushNow, so reading and storing overlap),
// and reports rows per second and the process's CPU time per row (Redis
// itself not included). Filling the stream is not timed. All rows are of
// one user, so every index is appended to.
func BenchmarkFlush(b *testing.B) {
	benchFlush(b, records)
}

// BenchmarkFlushManyUsers is BenchmarkFlush with rows spread over 300 users
// and request IDs made as the gateway makes them (time first), so that each
// batch writes into many places of the per-user index, as in production.
func BenchmarkFlushManyUsers(b *testing.B) {
	benchFlush(b, func(prefix string, n int) []Record {
		recs := make([]Record, n)
		for i := range recs {
			now := time.Now()
			recs[i] = rec(fmt.Sprintf("req_%012x%s%04d", now.UnixMilli(), prefix, i), fmt.Sprintf("usr_%016x", (i*7919)%300), now)
		}
		return recs
	})
}

func benchFlush(b *testing.B, records func(prefix string, n int) []Record) {
	ctx := context.Background()
	rdb, _ := startRedis(b)
	s := openStore(b)
	f := NewFlusher(rdb, s, FlusherConfig{Streams: []string{testStream}, Field: testField, Group: "g", Consumer: "c1", Batch: 1000}, nil)
	const perOp = 10_000
	rows := 0
	var spent, cpu time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		for j := 0; j < perOp/1000; j++ {
			xadd(b, rdb, records(fmt.Sprintf("b%d-%d", i, j), 1000)...)
		}
		b.StartTimer()
		start, cpu0 := time.Now(), cpuTime()
		n, err := f.FlushNow(ctx)
		spent += time.Since(start)
		cpu += cpuTime() - cpu0
		if err != nil || n != perOp {
			b.Fatalf("FlushNow = %d, %v", n, err)
		}
		rows += n
	}
	b.ReportMetric(float64(rows)/spent.Seconds(), "rows/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(rows), "cpu-ns/row")
}

// Records spread over several streams (the shards of the accounts) are all
// stored, each once, whichever stream holds them and whoever read them.
func TestFlusherReadsEveryStream(t *testing.T) {
	ctx := context.Background()
	rdb, _ := startRedis(t)
	s := openStore(t)
	streams := []string{"test:{#a}:usage", "test:{#b}:usage", "test:{#c}:usage"}
	put := func(stream string, recs []Record) {
		t.Helper()
		for _, r := range recs {
			b, _ := json.Marshal(r)
			if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{testField, b}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(streams[0], records("s0", 30))
	put(streams[1], records("s1", 20))
	cfg := FlusherConfig{Streams: streams, Field: testField, Group: "g", Consumer: "dead", Batch: 8}
	dead := NewFlusher(rdb, s, cfg, nil)
	if err := dead.ensureGroup(ctx); err != nil {
		t.Fatal(err)
	}
	// "dead" read a batch of each and vanished.
	if got, err := dead.read(ctx, ">", nil, -1); err != nil || entries(got) != 16 {
		t.Fatalf("read %d entries, %v; want 8 of each stream", entries(got), err)
	}
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: streams[2], Values: []any{testField, "junk"}}).Err(); err != nil {
		t.Fatal(err)
	}

	cfg.Consumer, cfg.Interval = "c1", 20*time.Millisecond
	f := NewFlusher(rdb, s, cfg, nil)
	f.claimIdle = 100 * time.Millisecond
	f.Start()
	defer f.Stop(ctx)
	put(streams[2], records("s2", 10))
	waitRows(t, s, 60)
	waitFor(t, func() bool {
		for _, st := range streams {
			if rdb.XLen(ctx, st).Val() != 0 {
				return false
			}
		}
		return true
	})
	if got := countRows(t, s, "usage"); got != 60 {
		t.Errorf("usage has %d rows, want 60", got)
	}
	var stream string
	if err := s.rd.QueryRowContext(ctx, "SELECT stream FROM usage_rejects").Scan(&stream); err != nil || stream != streams[2] {
		t.Errorf("reject kept from stream %q, %v; want %s", stream, err, streams[2])
	}
}

// Unless told otherwise, the flusher lingers three quarters of its
// interval, so that a record gathered under load still reaches SQLite
// within the interval; a longer linger is cut to the interval.
func TestFlusherLingerDefault(t *testing.T) {
	rdb, _ := startRedis(t)
	s := openStore(t)
	for _, c := range []struct{ interval, linger, want time.Duration }{
		{0, 0, 750 * time.Millisecond},
		{400 * time.Millisecond, 0, 300 * time.Millisecond},
		{400 * time.Millisecond, time.Second, 400 * time.Millisecond},
		{400 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond},
	} {
		f := NewFlusher(rdb, s, FlusherConfig{Streams: []string{testStream}, Field: testField, Interval: c.interval, Linger: c.linger}, nil)
		if f.cfg.Linger != c.want {
			t.Errorf("interval %s, linger %s: lingers %s; want %s", c.interval, c.linger, f.cfg.Linger, c.want)
		}
	}
}
