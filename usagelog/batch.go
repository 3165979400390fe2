package usagelog

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// decodeShard is the fewest entries worth a goroutine of their own. JSON
// decoding is a large share of a flush, so a large batch is decoded on
// every core.
const decodeShard = 128

// batch is one or more decoded reads, ready to store in one transaction.
type batch struct {
	recs    [][]Record // one part per read
	rejects []reject
	acks    []acks // every entry read, deleted ones included, for XACK
}

// acks are the IDs of entries read from one stream.
type acks struct {
	stream string
	ids    []string
}

// entries counts the entries in streams.
func entries(streams []redis.XStream) int {
	n := 0
	for _, s := range streams {
		n += len(s.Messages)
	}
	return n
}

// item is one record's JSON from a stream entry (an entry holds one, or a
// batch): id names the entry, and line the record's line in a batch (0 for
// an entry of one record).
type item struct {
	stream, id, raw string
	line            int
	msg             *redis.XMessage // the entry, for a reject that lacks the field
	missing         bool            // the entry holds neither field
}

// entryID names the item where a reject is kept: the entry's ID, and the
// record's line in a batch ("<id>/2"). It is made only for a reject.
func (it *item) entryID() string {
	if it.line == 0 {
		return it.id
	}
	return it.id + "/" + strconv.Itoa(it.line)
}

// items lists the records of the entries of streams, in stream order.
// Entries deleted while pending (no values) hold none; they are only
// acknowledged.
func (f *Flusher) items(streams []redis.XStream, out []item) []item {
	for _, s := range streams {
		for k := range s.Messages {
			m := &s.Messages[k]
			if m.Values == nil {
				continue
			}
			if raw, ok := m.Values[f.cfg.Field].(string); ok {
				out = append(out, item{stream: s.Stream, id: m.ID, raw: raw})
				continue
			}
			raw, ok := m.Values[f.cfg.BatchField].(string)
			if f.cfg.BatchField == "" || !ok {
				out = append(out, item{stream: s.Stream, id: m.ID, msg: m, missing: true})
				continue
			}
			for n := 1; ; n++ {
				line, rest, more := strings.Cut(raw, "\n")
				out = append(out, item{stream: s.Stream, id: m.ID, line: n, raw: line})
				if !more {
					break
				}
				raw = rest
			}
		}
	}
	return out
}

// decodeRoom is one pump's memory for decoding, kept from one read to the
// next: a read of thousands of records would otherwise take a few MiB of
// fresh memory each time, which the Go runtime returns to the system
// between reads and takes back, page fault by page fault, at the next.
type decodeRoom struct {
	items   []item
	rejects []*reject
	recs    chan []Record // record lists whose batch is stored, for the next reads
}

func newDecodeRoom() *decodeRoom {
	return &decodeRoom{recs: make(chan []Record, mergeBatches+1)}
}

// takeRecs returns a list of n zero records: a stored batch's, or new.
func (m *decodeRoom) takeRecs(n int) []Record {
	select {
	case r := <-m.recs:
		if cap(r) >= n {
			return r[:n]
		}
	default:
	}
	return make([]Record, n, n+n/4) // room to grow a little
}

// recycle takes back the record lists of a stored batch, emptied, so that
// no record outlives its batch.
func (m *decodeRoom) recycle(parts [][]Record) {
	for _, p := range parts {
		p = p[:cap(p)]
		clear(p)
		select {
		case m.recs <- p:
		default:
		}
	}
}

// decodeAll decodes the entries of streams into records and rejects, in
// stream order, in m's memory (nil for new).
func (f *Flusher) decodeAll(streams []redis.XStream, m *decodeRoom) batch {
	if m == nil {
		m = newDecodeRoom()
	}
	// The records in one list, so that a large read is decoded on every
	// core whichever streams and entries they came from.
	items := f.items(streams, m.items[:0])
	m.items = items
	defer clear(items) // they hold the read's strings
	// Records are decoded in place, then the few that are not (rejected)
	// are squeezed out.
	recs := m.takeRecs(len(items))
	if cap(m.rejects) < len(items) {
		m.rejects = make([]*reject, len(items))
	}
	rejects := m.rejects[:len(items)]
	defer clear(rejects)
	decodeRange := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			rejects[i] = f.decode(items[i], &recs[i])
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(items)/decodeShard)
	if workers <= 1 {
		decodeRange(0, len(items))
	} else {
		var wg sync.WaitGroup
		per := (len(items) + workers - 1) / workers
		for lo := 0; lo < len(items); lo += per {
			wg.Go(func() { decodeRange(lo, min(lo+per, len(items))) })
		}
		wg.Wait()
	}

	var b batch
	for _, s := range streams {
		if len(s.Messages) == 0 {
			continue
		}
		ids := make([]string, len(s.Messages))
		for i, m := range s.Messages {
			ids[i] = m.ID
		}
		b.acks = append(b.acks, acks{s.Stream, ids})
	}
	kept := 0
	for i := range items {
		if rejects[i] != nil {
			b.rejects = append(b.rejects, *rejects[i])
			continue
		}
		if kept != i {
			recs[kept] = recs[i]
		}
		kept++
	}
	clear(recs[kept:])
	b.recs = [][]Record{recs[:kept]}
	return b
}

// mergeBatches is the most batches, already read and decoded, that pump
// stores in one transaction when SQLite falls behind: a commit, and each
// index page it writes again, costs far more than a row, so a backlog is
// worked off in fewer, larger transactions.
const mergeBatches = 4

// pump stores the batches read returns until read returns none, more is
// false, or an error occurs. Reading and decoding the next batches overlap
// with storing the current one: SQLite and Redis each work while the other
// does, and the batches that are ready when a transaction starts go into
// it together (at most mergeBatches). Entries read but not stored when
// pump fails stay pending in the stream, for drainPending. It decodes in
// room, which its caller may keep for the next pump (nil: new memory);
// no two pumps may share one at a time.
func (f *Flusher) pump(ctx context.Context, room *decodeRoom, read func(context.Context) (streams []redis.XStream, more bool, err error)) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan decoded, mergeBatches-1)
	if room == nil {
		room = newDecodeRoom()
	}
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // no reader outlives pump
	wg.Go(func() {
		defer close(ch)
		for more := true; more; {
			var d decoded
			var streams []redis.XStream
			streams, more, d.err = read(ctx)
			if d.err == nil && entries(streams) == 0 {
				return
			}
			if d.err == nil {
				d.b = f.decodeAll(streams, room)
			}
			select {
			case ch <- d:
			case <-ctx.Done():
				return
			}
			if d.err != nil {
				return
			}
		}
	})
	total := 0
	for d := range ch {
		if d.err != nil {
			return total, d.err
		}
		b, readErr := gather(d.b, ch)
		n, err := f.store(ctx, b)
		total += n
		if err != nil {
			return total, err
		}
		room.recycle(b.recs)
		if readErr != nil {
			return total, readErr
		}
	}
	return total, nil
}

// decoded is what pump's reader hands on: a batch, or the error that
// ended reading.
type decoded struct {
	b   batch
	err error
}

// gather adds to b the batches waiting in ch, without waiting for more,
// up to mergeBatches in all. A read error met on the way is returned, to
// be reported once b is stored.
func gather(b batch, ch <-chan decoded) (batch, error) {
	for range mergeBatches - 1 {
		select {
		case d, ok := <-ch:
			if !ok {
				return b, nil
			}
			if d.err != nil {
				return b, d.err
			}
			b.add(d.b)
		default:
			return b, nil
		}
	}
	return b, nil
}

// add appends o to b, to be stored in the same transaction.
func (b *batch) add(o batch) {
	b.recs = append(b.recs, o.recs...) // the records are not copied
	b.rejects = append(b.rejects, o.rejects...)
	b.acks = append(b.acks, o.acks...)
}

// store writes one batch in one transaction, then acknowledges and deletes
// its entries. It returns how many entries it took off the stream.
func (f *Flusher) store(ctx context.Context, b batch) (int, error) {
	f.batchMu.Lock()
	defer f.batchMu.Unlock()
	inserted, err := f.s.insertBatch(ctx, b.recs, b.rejects)
	if err != nil {
		return 0, err
	}
	// Only after the commit: a crash before this line leaves the entries
	// pending, and storing them again is a no-op.
	n := 0
	_, err = f.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, a := range b.acks {
			p.XAck(ctx, a.stream, f.cfg.Group, a.ids...)
			p.XDel(ctx, a.stream, a.ids...)
			n += len(a.ids)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ack usage entries: %w", err)
	}
	if ce := f.log.Check(zap.DebugLevel, "usage flushed"); ce != nil {
		ce.Write(zap.Int("entries", n), zap.Int("inserted", inserted), zap.Int("rejected", len(b.rejects)))
	}
	return n, nil
}

// decode reads one record into r. One that is not a valid Record comes back as a
// reject carrying its raw value; the log gets the entry ID and the reason
// only, never the content.
func (f *Flusher) decode(it item, r *Record) *reject {
	if it.missing {
		b, _ := json.Marshal(it.msg.Values)
		return f.rejected(it.stream, it.entryID(), string(b), "missing field "+f.cfg.Field)
	}
	if err := decodeRecord(it.raw, r); err != nil {
		return f.rejected(it.stream, it.entryID(), it.raw, "bad json: "+err.Error())
	}
	if err := r.validate(); err != nil {
		return f.rejected(it.stream, it.entryID(), it.raw, err.Error())
	}
	return nil
}

func (f *Flusher) rejected(stream, id, raw, reason string) *reject {
	f.log.Error("usage stream entry rejected, kept in usage_rejects", zap.String("stream", stream),
		zap.String("entry_id", id), zap.Int("bytes", len(raw)), zap.String("reason", rejectKind(reason)))
	return &reject{stream: stream, entryID: id, raw: raw, reason: reason}
}

// rejectKind trims a reject reason to its fixed prefix for the log, since
// JSON error texts may quote bits of the content.
func rejectKind(reason string) string {
	if strings.HasPrefix(reason, "bad json") {
		return "bad json"
	}
	return reason
}

// idLess reports whether stream entry ID a ("ms-seq") sorts before b.
func idLess(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return am < bm || am == bm && as < bs
}

func splitID(id string) (ms, seq uint64) {
	m, s, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(m, 10, 64)
	seq, _ = strconv.ParseUint(s, 10, 64)
	return ms, seq
}
