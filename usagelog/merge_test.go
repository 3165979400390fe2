package usagelog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// readBatch is a decoded read of one record, for gather.
func readBatch(id string) decoded {
	return decoded{b: batch{recs: [][]Record{{{RequestID: id}}}, acks: []acks{{"s", []string{id}}}}}
}

func batchIDs(b batch) string {
	var ids []string
	for _, a := range b.acks {
		ids = append(ids, a.ids...)
	}
	return fmt.Sprint(ids, len(b.recs))
}

func TestGatherTakesReadyBatchesUpToTheLimit(t *testing.T) {
	ch := make(chan decoded, 8)
	for _, id := range []string{"2", "3", "4", "5"} {
		ch <- readBatch(id)
	}
	b, err := gather(readBatch("1").b, ch)
	if err != nil || batchIDs(b) != "[1 2 3 4] 4" {
		t.Errorf("gather = %s, %v; want 4 batches, the most in one transaction", batchIDs(b), err)
	}
	// Nothing more waiting: gather does not wait for it.
	b, err = gather((<-ch).b, ch)
	if err != nil || batchIDs(b) != "[5] 1" {
		t.Errorf("gather = %s, %v; want the last batch alone", batchIDs(b), err)
	}

	// A read error after a batch: the batches before it are kept, the
	// error comes back to be reported after they are stored.
	boom := errors.New("boom")
	ch <- readBatch("2")
	ch <- decoded{err: boom}
	b, err = gather(readBatch("1").b, ch)
	if !errors.Is(err, boom) || batchIDs(b) != "[1 2] 2" {
		t.Errorf("gather = %s, %v; want batches 1 and 2 and the read error", batchIDs(b), err)
	}

	ch <- readBatch("2")
	close(ch)
	b, err = gather(readBatch("1").b, ch)
	if err != nil || batchIDs(b) != "[1 2] 2" {
		t.Errorf("gather on a closed channel = %s, %v", batchIDs(b), err)
	}
}

// TestFlusherFailedTransactionLeavesEntriesPending makes SQLite refuse one
// record in the middle of a stream flushed in small, merged batches: every
// record must then be either stored (and gone from the stream) or still in
// the stream, never both and never neither; once the cause is gone, a
// flush stores each record once.
func TestFlusherFailedTransactionLeavesEntriesPending(t *testing.T) {
	ctx := context.Background()
	rdb, _ := startRedis(t)
	s := openStore(t)
	f := NewFlusher(rdb, s, FlusherConfig{Streams: []string{testStream}, Field: testField, Group: "g", Consumer: "c1", Batch: 10}, nil)
	recs := records("a", 300)
	recs[201].RequestID = "boom"
	xadd(t, rdb, recs...)
	if _, err := s.wr.ExecContext(ctx, `CREATE TRIGGER usage_boom BEFORE INSERT ON usage
		WHEN NEW.request_id = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END`); err != nil {
		t.Fatal(err)
	}

	n, err := f.FlushNow(ctx)
	if err == nil {
		t.Fatal("FlushNow stored a record SQLite refused")
	}
	stored := countRows(t, s, "usage")
	left := int(rdb.XLen(ctx, testStream).Val())
	if stored != n || stored+left != len(recs) || stored > 200 {
		t.Fatalf("after the failure: %d rows stored, FlushNow said %d, %d entries left in the stream; want %d in all, record 201 not reached",
			stored, n, left, len(recs))
	}

	if _, err := s.wr.ExecContext(ctx, `DROP TRIGGER usage_boom`); err != nil {
		t.Fatal(err)
	}
	m, err := f.FlushNow(ctx)
	if err != nil || n+m != len(recs) {
		t.Fatalf("FlushNow after the failure = %d, %v; want the other %d", m, err, len(recs)-n)
	}
	if got := countRows(t, s, "usage"); got != len(recs) {
		t.Errorf("usage has %d rows, want %d", got, len(recs))
	}
	assertStreamEmpty(t, rdb, "g")
}

// A pump decodes read after read in the same memory (decodeRoom), taking
// back the record lists of each stored batch: every read decodes as it
// would in fresh memory, rejects keep their entry and line, and a list
// comes back empty, holding no record of its batch.
func TestDecodeRoomReusedAcrossReads(t *testing.T) {
	f := &Flusher{cfg: FlusherConfig{Field: "r", BatchField: "rs"}, log: zap.NewNop()}
	line := func(id string) string {
		r := rec(id, "u_"+id, time.Unix(1_700_000_000, 0))
		b, err := r.AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	read := func(round, singles, lines int) []redis.XStream {
		var msgs []redis.XMessage
		for i := range singles {
			msgs = append(msgs, redis.XMessage{ID: fmt.Sprintf("%d-%d", round, i), Values: map[string]any{"r": line(fmt.Sprintf("s%d_%d", round, i))}})
		}
		var joined []string
		for i := range lines {
			joined = append(joined, line(fmt.Sprintf("b%d_%d", round, i)))
		}
		joined = append(joined, `{"request_id":"bad"`)
		msgs = append(msgs, redis.XMessage{ID: fmt.Sprintf("%d-b", round), Values: map[string]any{"rs": strings.Join(joined, "\n")}},
			redis.XMessage{ID: fmt.Sprintf("%d-x", round), Values: map[string]any{"other": "x"}})
		return []redis.XStream{{Stream: "s", Messages: msgs}}
	}
	describe := func(b batch) string {
		out := fmt.Sprint(len(b.recs), b.acks)
		for _, p := range b.recs {
			for _, r := range p {
				out += " " + r.RequestID + "/" + r.User
			}
		}
		for _, rj := range b.rejects {
			out += " reject " + rj.entryID
		}
		return out
	}
	room := newDecodeRoom()
	for round, size := range [][2]int{{5, 300}, {40, 2}, {0, 900}, {3, 3}} {
		streams := read(round, size[0], size[1])
		b := f.decodeAll(streams, room)
		got, want := describe(b), describe(f.decodeAll(streams, nil))
		if got != want {
			t.Fatalf("round %d: in reused memory\n%s\nin fresh memory\n%s", round, got, want)
		}
		if n := len(b.recs[0]); n != size[0]+size[1] || len(b.rejects) != 2 ||
			b.rejects[0].entryID != fmt.Sprintf("%d-b/%d", round, size[1]+1) || b.rejects[1].entryID != fmt.Sprintf("%d-x", round) {
			t.Fatalf("round %d: %d records, rejects %s", round, n, describe(b))
		}
		room.recycle(b.recs)
		if p := <-room.recs; p[0].RequestID != "" || p[len(p)-1].User != "" {
			t.Fatalf("round %d: a recycled list still holds %q", round, p[0].RequestID)
		} else {
			room.recs <- p
		}
	}
	for _, it := range room.items[:cap(room.items)] {
		if it.raw != "" || it.id != "" {
			t.Fatalf("an item outlives its read: %+v", it)
		}
	}
}
