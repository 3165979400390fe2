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

// decodeAll decodes the entries of streams into records and rejects, in
// stream order.
func (f *Flusher) decodeAll(streams []redis.XStream) batch {
	// The entries in one list, each with its stream, so that a large read
	// is decoded on every core whichever streams it came from.
	msgs := make([]redis.XMessage, 0, entries(streams))
	from := make([]string, 0, cap(msgs))
	for _, s := range streams {
		msgs = append(msgs, s.Messages...)
		for range s.Messages {
			from = append(from, s.Stream)
		}
	}
	// Records are decoded in place, then the few entries that are not
	// records (rejected, or deleted while pending: only to ack) are
	// squeezed out.
	recs := make([]Record, len(msgs))
	rejects := make([]*reject, len(msgs))
	decodeRange := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if msgs[i].Values != nil {
				recs[i], rejects[i] = f.decode(from[i], msgs[i])
			}
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(msgs)/decodeShard)
	if workers <= 1 {
		decodeRange(0, len(msgs))
	} else {
		var wg sync.WaitGroup
		per := (len(msgs) + workers - 1) / workers
		for lo := 0; lo < len(msgs); lo += per {
			wg.Go(func() { decodeRange(lo, min(lo+per, len(msgs))) })
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
	for i := range msgs {
		switch {
		case msgs[i].Values == nil:
		case rejects[i] != nil:
			b.rejects = append(b.rejects, *rejects[i])
		default:
			if kept != i {
				recs[kept] = recs[i]
			}
			kept++
		}
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
// pump fails stay pending in the stream, for drainPending.
func (f *Flusher) pump(ctx context.Context, read func(context.Context) (streams []redis.XStream, more bool, err error)) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan decoded, mergeBatches-1)
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
				d.b = f.decodeAll(streams)
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

// decode reads one entry. An entry that is not a valid Record comes back as
// a reject carrying its raw value; the log gets the entry ID and the reason
// only, never the content.
func (f *Flusher) decode(stream string, m redis.XMessage) (Record, *reject) {
	raw, ok := m.Values[f.cfg.Field].(string)
	if !ok {
		b, _ := json.Marshal(m.Values)
		return Record{}, f.rejected(stream, m.ID, string(b), "missing field "+f.cfg.Field)
	}
	r, err := decodeRecord(raw)
	if err != nil {
		return Record{}, f.rejected(stream, m.ID, raw, "bad json: "+err.Error())
	}
	if err := r.validate(); err != nil {
		return Record{}, f.rejected(stream, m.ID, raw, err.Error())
	}
	return r, nil
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
