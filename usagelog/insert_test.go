package usagelog

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// distinctRec returns a record whose every field depends on i, so that a
// column bound to the wrong value shows.
func distinctRec(id, user string, i int, t time.Time) Record {
	return Record{
		RequestID: id, Time: t.Add(time.Duration(i) * time.Microsecond).UTC(), User: user,
		KeyID: fmt.Sprintf("k%d", i), Model: fmt.Sprintf("m%d", i), Endpoint: fmt.Sprintf("/e%d", i),
		Stream: i%2 == 0, Status: 200 + i%300, Outcome: fmt.Sprintf("o%d", i),
		InputTokens: int64(1000 + i), CachedInputTokens: int64(2000 + i), CacheWriteTokens: int64(3000 + i),
		OutputTokens: int64(4000 + i), ReasoningTokens: int64(5000 + i), Cost: money.Nanos(6000 + i),
		Currency: fmt.Sprintf("C%d", i), Estimated: i%3 == 0, Clamped: i%5 == 0,
		DurationMS: int64(7000 + i), TTFTMS: int64(8000 + i), ClientIP: fmt.Sprintf("198.51.100.%d", i%250),
	}
}

// runRec returns a record whose columns change in runs of different
// lengths (each column repeats its value over a few rows, then changes,
// at rows that do not line up with each other or with the statements'
// chunks), so that a column given the row before's value shows.
func runRec(id, user string, i int, t time.Time) Record {
	return Record{
		RequestID: id, Time: t.Add(time.Duration(i) * time.Microsecond).UTC(), User: user,
		KeyID: fmt.Sprintf("k%d", i/2), Model: fmt.Sprintf("m%d", i/3), Endpoint: fmt.Sprintf("/e%d", i/5),
		Stream: i/2%2 == 0, Status: 200 + i/7, Outcome: fmt.Sprintf("o%d", i/11),
		InputTokens: int64(1000 + i/3), CachedInputTokens: int64(2000 + i/4), CacheWriteTokens: int64(i / 6 % 2 * 300),
		OutputTokens: int64(4000 + i/5), ReasoningTokens: int64(i / 8 % 3), Cost: money.Nanos(6000 + i/9),
		Currency: fmt.Sprintf("C%d", i/13), Estimated: i/4%3 == 0, Clamped: i/6%5 == 0,
		DurationMS: int64(7000 + i/10), TTFTMS: int64(i / 12 % 2 * 8000), ClientIP: fmt.Sprintf("198.51.100.%d", i/17%250),
	}
}

// TestInsertUsageEveryChunkSize stores batches whose sizes need every
// prepared statement (full chunks and each smaller power of two), with
// every value distinct and with values repeated in runs, checks
// that every column of every row reads back as written and that a replay
// inserts nothing, then that Close finalizes the statements and the file
// opens again.
func TestInsertUsageEveryChunkSize(t *testing.T) {
	t.Run("distinct values", func(t *testing.T) { testInsertEveryChunkSize(t, distinctRec) })
	t.Run("repeated values", func(t *testing.T) { testInsertEveryChunkSize(t, runRec) })
}

func testInsertEveryChunkSize(t *testing.T, makeRec func(id, user string, i int, t time.Time) Record) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	total := 0
	for _, n := range []int{1, 2, 3, 63, 64, 65, 127, 128, 129, 1000} {
		user := fmt.Sprintf("u%d", n)
		recs := make([]Record, n)
		for i := range recs {
			recs[i] = makeRec(fmt.Sprintf("r%d-%04d", n, i), user, i, now)
		}
		if got, err := s.InsertUsage(ctx, recs); err != nil || got != n {
			t.Fatalf("%d records: inserted %d, %v", n, got, err)
		}
		if got, err := s.InsertUsage(ctx, recs); err != nil || got != 0 {
			t.Fatalf("%d records again: inserted %d, %v; want 0", n, got, err)
		}
		total += n
		stored, err := s.ListUsage(ctx, UsageQuery{User: user, Limit: MaxUsageLimit})
		if err != nil || len(stored) != n {
			t.Fatalf("%d records: read %d back, %v", n, len(stored), err)
		}
		for j, got := range stored { // newest first
			if want := recs[n-1-j]; !reflect.DeepEqual(got, want) {
				t.Fatalf("%d records: row %d\n got %+v\nwant %+v", n, j, got, want)
			}
		}
	}
	if got := countRows(t, s, "usage"); got != total {
		t.Errorf("usage has %d rows, want %d", got, total)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.InsertUsage(ctx, []Record{makeRec("after-reopen", "u", 1, now)}); err != nil || got != 1 {
		t.Errorf("insert after reopening: %d, %v", got, err)
	}
}

// TestInsertBatchFailureWritesNothing makes one row of a batch fail inside
// the transaction: no row of the batch, and no reject, may be left, and the
// writer must take the next batch (with the failure gone) in full.
func TestInsertBatchFailureWritesNothing(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	now := time.Now()
	recs := make([]Record, 200)
	for i := range recs {
		recs[i] = rec(fmt.Sprintf("r%03d", i), "u1", now)
	}
	recs[150].RequestID = "boom"
	if _, err := s.InsertUsage(ctx, recs[:10]); err != nil { // the statements are prepared before the trigger
		t.Fatal(err)
	}
	if _, err := s.wr.ExecContext(ctx, `CREATE TRIGGER usage_boom BEFORE INSERT ON usage
		WHEN NEW.request_id = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END`); err != nil {
		t.Fatal(err)
	}
	rejects := []reject{{testStream, "1-0", "junk", "bad json"}}
	if _, err := s.insertBatch(ctx, [][]Record{recs[10:100], recs[100:]}, rejects); err == nil {
		t.Fatal("a batch with a failing row was stored")
	}
	if got := countRows(t, s, "usage"); got != 10 {
		t.Errorf("usage has %d rows after the failed batch, want the 10 stored before", got)
	}
	if got := countRows(t, s, "usage_rejects"); got != 0 {
		t.Errorf("usage_rejects has %d rows after the failed batch, want 0", got)
	}
	if _, err := s.wr.ExecContext(ctx, `DROP TRIGGER usage_boom`); err != nil {
		t.Fatal(err)
	}
	if n, err := s.insertBatch(ctx, [][]Record{recs[10:100], recs[100:]}, rejects); err != nil || n != 190 {
		t.Fatalf("the batch again: inserted %d, %v; want 190", n, err)
	}
	if got := countRows(t, s, "usage_rejects"); got != 1 {
		t.Errorf("usage_rejects has %d rows, want 1", got)
	}
}
