package usagelog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRecordJSON(t *testing.T) {
	r := rec("req-1", "u1", time.Date(2026, 3, 4, 5, 7, 8, 123456789, time.UTC))
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := []string{"request_id", "time", "user", "key_id", "model", "endpoint", "stream", "status",
		"outcome", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "cost",
		"currency", "estimated", "duration_ms", "ttft_ms", "client_ip"}
	for _, f := range want {
		if _, ok := m[f]; !ok {
			t.Errorf("JSON lacks %q: %s", f, b)
		}
	}
	if len(m) != len(want) {
		t.Errorf("JSON has %d fields, want %d (cache_write_tokens omitted when 0): %s", len(m), len(want), b)
	}
	if m["time"] != "2026-03-04T05:07:08.123456789Z" {
		t.Errorf("time = %v, want RFC 3339 with nanoseconds", m["time"])
	}
	if m["cost"] != "0.000123456" {
		t.Errorf("cost = %#v, want a decimal string", m["cost"])
	}

	r.CacheWriteTokens = 5
	b, _ = json.Marshal(r)
	var back Record
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, r) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, r)
	}
}

func TestInsertUsageDedupe(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	now := time.Now()

	n, err := s.InsertUsage(ctx, []Record{rec("a", "u1", now), rec("b", "u1", now), rec("a", "u1", now)})
	if err != nil || n != 2 {
		t.Fatalf("first insert = %d, %v; want 2 (same request_id twice in a batch)", n, err)
	}
	n, err = s.InsertUsage(ctx, []Record{rec("b", "u1", now), rec("c", "u1", now)})
	if err != nil || n != 1 {
		t.Fatalf("replay = %d, %v; want 1", n, err)
	}
	if got := countRows(t, s, "usage"); got != 3 {
		t.Errorf("usage has %d rows, want 3", got)
	}
	if n, err := s.InsertUsage(ctx, nil); err != nil || n != 0 {
		t.Errorf("empty insert = %d, %v", n, err)
	}

	for name, bad := range map[string]Record{
		"no request_id": rec("", "u1", now),
		"no user":       rec("e", "", now),
		"no time":       rec("e", "u1", time.Time{}),
		"year 3000":     rec("e", "u1", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)),
	} {
		if _, err := s.InsertUsage(ctx, []Record{rec("d", "u1", now), bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if got := countRows(t, s, "usage"); got != 3 {
		t.Errorf("a refused batch wrote rows: %d", got)
	}

	got, err := s.ListUsage(ctx, UsageQuery{})
	if err != nil {
		t.Fatal(err)
	}
	want := rec("c", "u1", now.UTC())
	want.Time = got[0].Time
	if !got[0].Time.Equal(now) || !reflect.DeepEqual(got[0], want) {
		t.Errorf("stored record:\n got %+v\nwant %+v", got[0], want)
	}
}

func TestListUsage(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var recs []Record
	for i := 0; i < 20; i++ {
		r := rec(fmt.Sprintf("r%02d", i), []string{"u1", "u2"}[i%2], base.Add(time.Duration(i/2)*time.Minute))
		r.KeyID = []string{"k1", "k2", "k3", "k4"}[i%4]
		r.Model = []string{"m-a", "m-b"}[i/10]
		recs = append(recs, r)
	}
	if _, err := s.InsertUsage(ctx, recs); err != nil {
		t.Fatal(err)
	}
	ids := func(rs []Record) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.RequestID)
		}
		return strings.Join(out, ",")
	}

	for name, tc := range map[string]struct {
		q    UsageQuery
		want string
	}{
		"all newest first, ties by id": {UsageQuery{Limit: 5}, "r19,r18,r17,r16,r15"},
		"user":                         {UsageQuery{User: "u1", Limit: 3}, "r18,r16,r14"},
		"key":                          {UsageQuery{Key: "k2"}, "r17,r13,r09,r05,r01"},
		"model":                        {UsageQuery{Model: "m-a", Limit: 2}, "r09,r08"},
		"user and model":               {UsageQuery{User: "u2", Model: "m-b"}, "r19,r17,r15,r13,r11"},
		"from inclusive, to exclusive": {UsageQuery{From: base.Add(2 * time.Minute), To: base.Add(4 * time.Minute)}, "r07,r06,r05,r04"},
		"from only":                    {UsageQuery{From: base.Add(9 * time.Minute)}, "r19,r18"},
		"to only":                      {UsageQuery{To: base.Add(time.Minute)}, "r01,r00"},
		"cursor":                       {UsageQuery{Before: "r17", Limit: 3}, "r16,r15,r14"},
		"cursor with filter":           {UsageQuery{User: "u2", Before: "r15", Limit: 2}, "r13,r11"},
		"nothing":                      {UsageQuery{User: "nobody"}, ""},
	} {
		got, err := s.ListUsage(ctx, tc.q)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if ids(got) != tc.want {
			t.Errorf("%s: got %s, want %s", name, ids(got), tc.want)
		}
	}

	// With the key known, its rows are found through its owner's index and
	// the answer is the same.
	if _, err := s.CreateUser(ctx, User{ID: "u2"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, Key{ID: "k2", UserID: "u2", Hash: "h2"}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []UsageQuery{{Key: "k2"}, {Key: "k2", User: "u2"}} {
		if got, err := s.ListUsage(ctx, q); err != nil || ids(got) != "r17,r13,r09,r05,r01" {
			t.Errorf("%+v: got %s, %v", q, ids(got), err)
		}
	}
	if got, err := s.ListUsage(ctx, UsageQuery{Key: "k2", User: "u1"}); err != nil || len(got) != 0 {
		t.Errorf("key of another user: got %s, %v", ids(got), err)
	}

	// Paging with the cursor visits every record once.
	var all []Record
	q := UsageQuery{Limit: 7}
	for {
		page, err := s.ListUsage(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		q.Before = page[len(page)-1].RequestID
	}
	if len(all) != 20 || all[0].RequestID != "r19" || all[19].RequestID != "r00" {
		t.Errorf("paging visited %s", ids(all))
	}

	if _, err := s.ListUsage(ctx, UsageQuery{Before: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown cursor: %v, want ErrNotFound", err)
	}
}

func TestListUsageLimits(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	recs := make([]Record, 1100)
	for i := range recs {
		recs[i] = rec(fmt.Sprintf("r%04d", i), "u1", time.Unix(int64(i), 0))
	}
	if _, err := s.InsertUsage(ctx, recs); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ limit, want int }{{0, 100}, {-1, 100}, {10, 10}, {5000, 1000}} {
		got, err := s.ListUsage(ctx, UsageQuery{Limit: tc.limit})
		if err != nil || len(got) != tc.want {
			t.Errorf("Limit %d: %d records, %v; want %d", tc.limit, len(got), err, tc.want)
		}
	}
}

// BenchmarkInsertUsage measures InsertUsage with 1000-row batches, the
// flusher's default batch, and reports rows per second and the CPU time
// spent per row.
// BenchmarkInsertLargeLedger stores rows of 1,000 users, in turn, into a
// ledger that already holds 300,000 of their rows, with 1,000 and with 5,000
// rows per transaction. Each user's newest entries sit on their own page of
// the per-user index, so a transaction rewrites about one page per user it
// touches, however few rows that user has in it: rows per transaction, not
// rows, set the cost (the reason the flusher lingers up to flush_interval
// under load).
func BenchmarkInsertLargeLedger(b *testing.B) {
	for _, perTx := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("rows-per-tx=%d", perTx), func(b *testing.B) {
			ctx := context.Background()
			s := openStore(b)
			start := time.Now()
			n := 0
			batch := func(size int) []Record {
				recs := make([]Record, size)
				for j := range recs {
					t := start.Add(time.Duration(n) * time.Microsecond)
					recs[j] = rec(fmt.Sprintf("req_%012x%016x", t.UnixMilli(), n), fmt.Sprintf("usr_%016x", (n*7919)%1000), t)
					n++
				}
				return recs
			}
			for n < 300_000 {
				if _, err := s.InsertUsage(ctx, batch(5000)); err != nil {
					b.Fatal(err)
				}
			}
			rows := 0
			var cpu time.Duration
			for b.Loop() {
				recs := batch(perTx)
				cpu0 := cpuTime()
				if _, err := s.InsertUsage(ctx, recs); err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime() - cpu0
				rows += perTx
			}
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(rows), "cpu-ns/row")
		})
	}
}

func BenchmarkInsertUsage(b *testing.B) {
	ctx := context.Background()
	s := openStore(b)
	const batch = 1000
	recs := make([]Record, batch)
	now := time.Now()
	rows := 0
	var cpu time.Duration
	for i := 0; b.Loop(); i++ {
		for j := range recs {
			recs[j] = rec(fmt.Sprintf("req-%d-%d", i, j), fmt.Sprintf("u%d", j%50), now.Add(time.Duration(rows+j)))
		}
		cpu0 := cpuTime()
		n, err := s.InsertUsage(ctx, recs)
		cpu += cpuTime() - cpu0
		if err != nil || n != batch {
			b.Fatalf("inserted %d, %v", n, err)
		}
		rows += n
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(rows), "cpu-ns/row")
}
