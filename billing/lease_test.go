package billing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

func takeLease(t testing.TB, a *Accounts, lt LeaseTake) LeaseGrant {
	t.Helper()
	if lt.TTL == 0 {
		lt.TTL = time.Minute
	}
	g, err := a.TakeLease(t.Context(), lt)
	if err != nil {
		t.Fatalf("TakeLease(%+v): %v", lt, err)
	}
	return g
}

// A lease is held like a hold, shared by Share, refused below Min, and
// settled once per sequence number whatever the order or the replays.
func TestLeaseTakeSettleReturn(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	credit(t, a, "u", 10*unit)

	g := takeLease(t, a, LeaseTake{User: "u", ID: "n1.1", Want: 3 * unit, Min: unit / 100, Share: 4})
	if g.Granted != 25*unit/10 || g.Total != g.Granted {
		t.Fatalf("first lease = %+v; want 2.50 of 10.00 shared by 4", g)
	}
	wantRawHeld(t, a, "u", 10*unit, 25*unit/10)

	// A refill of a lease Redis does not have is refused: the node must
	// start a new one.
	if _, err := a.TakeLease(ctx, LeaseTake{User: "u", ID: "n1.9", Want: 1, Share: 1, TTL: time.Minute, Refill: true}); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("refill of an unknown lease: %v; want ErrLeaseLost", err)
	}
	// Below Min, nothing.
	credit(t, a, "v", unit/1000)
	if g := takeLease(t, a, LeaseTake{User: "v", ID: "n1.2", Want: unit, Min: unit / 100, Share: 1}); g.Granted != 0 {
		t.Fatalf("lease on 0.001 with min 0.01 = %+v; want none", g)
	}
	wantRawHeld(t, a, "v", unit/1000, 0)

	// Settlements 2, 1, 2 (a replay), 3: three debits, the lease and held
	// down by what they cost.
	rec := []byte(`{"request_id":"r"}`)
	steps := []struct {
		seq  int64
		want int64
	}{{2, 1}, {1, 1}, {2, 0}, {3, 1}}
	for _, s := range steps {
		n, err := a.SettleLease(ctx, "u", "n1.1", []LeaseSettlement{{Seq: s.seq, Cost: unit / 10, Record: rec}})
		if s.seq == 3 { // a settlement that cost nothing is applied too
			n2, err2 := a.SettleLease(ctx, "u", "n1.1", []LeaseSettlement{{Seq: 4, Cost: 0, Record: rec}})
			if n2 != 1 || err2 != nil {
				t.Fatalf("a free settlement: %d, %v", n2, err2)
			}
		}
		if err != nil || n != s.want {
			t.Fatalf("SettleLease seq %d = %d, %v; want %d applied", s.seq, n, err, s.want)
		}
	}
	wantRawHeld(t, a, "u", 97*unit/10, 22*unit/10)
	if n, _ := UsageBacklog(ctx, rdb); n != 4 {
		t.Fatalf("usage stream has %d records; want 4", n)
	}
	// The marks collapse into the watermark.
	if m, _ := rdb.HGetAll(ctx, leaseSeqKey("u", "n1.1")).Result(); len(m) != 1 || m["wm"] != "4" {
		t.Fatalf("sequence marks = %v; want only wm 4", m)
	}

	// Give back 1.00, then all: held is back to 0, the lease gone.
	if n, err := a.ReturnLease(ctx, "u", "n1.1", unit); err != nil || n != unit {
		t.Fatalf("ReturnLease 1.00 = %s, %v", n, err)
	}
	if n, err := a.ReturnLease(ctx, "u", "n1.1", -1); err != nil || n != 12*unit/10 {
		t.Fatalf("ReturnLease all = %s, %v; want 1.20", n, err)
	}
	wantRawHeld(t, a, "u", 97*unit/10, 0)
	if st, _ := a.Leases(ctx, "u"); len(st.Leases) != 0 {
		t.Fatalf("leases after giving all back: %v", st.Leases)
	}
	// A settlement arriving after its lease is gone still debits, once.
	if n, _ := a.SettleLease(ctx, "u", "n1.1", []LeaseSettlement{{Seq: 5, Cost: unit, Record: rec}}); n != 1 {
		t.Fatalf("late settlement applied %d times", n)
	}
	if n, _ := a.SettleLease(ctx, "u", "n1.1", []LeaseSettlement{{Seq: 5, Cost: unit, Record: rec}}); n != 0 {
		t.Fatalf("replayed late settlement applied %d times", n)
	}
	wantRawHeld(t, a, "u", 87*unit/10, 0)
}

// Batches mixing settlements in order, out of order and replayed apply
// each once, and debit exactly (sums near the bound included); the marks
// still collapse into the watermark.
func TestSettleLeaseBatchOrders(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	credit(t, a, "u", money.MaxNanos)
	takeLease(t, a, LeaseTake{User: "u", ID: "n1.1", Want: unit, Share: 1})
	batch := func(costs map[int64]money.Nanos, seqs ...int64) []LeaseSettlement {
		s := make([]LeaseSettlement, len(seqs))
		for i, q := range seqs { // records of different lengths, each its own
			rec := fmt.Appendf(nil, `{"request_id":"r%d%s"}`, q, strings.Repeat("x", int(q)))
			s[i] = LeaseSettlement{Seq: q, Cost: costs[q], Record: rec}
		}
		return s
	}
	big := money.MaxNanos/2 + 1000 // two of them add up past a Lua number's exact integers
	costs := map[int64]money.Nanos{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: big, 9: 9, 10: big, 11: big + 1, 12: 12}
	steps := []struct {
		seqs []int64
		want int64
	}{
		{[]int64{1, 2, 4, 3, 3, 5}, 5}, // in order, a gap, the gap filled, a replay
		{[]int64{5, 7, 6}, 2},          // a replay, then out of order
		{[]int64{8, 9, 1}, 2},          // a big one, and an old replay
		{[]int64{2, 12, 3}, 1},         // one new (ahead of the watermark) among replays
		{[]int64{10, 11}, 2},           // two big ones in one batch (an odd sum past 2^53)
	}
	for _, st := range steps {
		n, err := a.SettleLease(ctx, "u", "n1.1", batch(costs, st.seqs...))
		if err != nil || n != st.want {
			t.Fatalf("SettleLease %v = %d, %v; want %d applied", st.seqs, n, err, st.want)
		}
	}
	var spent money.Nanos // more than the balance: it ends below zero
	for _, c := range costs {
		spent += c
	}
	raw, err := rdb.HGet(ctx, acctKey("u"), "balance").Int64()
	if want := int64(money.MaxNanos) - int64(spent); err != nil || raw != want {
		t.Fatalf("balance %d, %v; want %d", raw, err, want)
	}
	if m, _ := rdb.HGetAll(ctx, leaseSeqKey("u", "n1.1")).Result(); len(m) != 1 || m["wm"] != "12" {
		t.Fatalf("sequence marks = %v; want only wm 12", m)
	}
	// Each applied settlement's own record, once, whatever the batch.
	got := streamRecords(t, rdb, "u")
	var want []string
	for q := range int64(12) {
		want = append(want, string(batch(costs, q+1)[0].Record))
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("usage records:\n got %q\nwant %q", got, want)
	}
	if n, _ := UsageBacklog(ctx, rdb); n != int64(len(steps)) {
		t.Fatalf("usage stream has %d entries; want one per batch, %d", n, len(steps))
	}
}

// A lease's settlements numbered in a run go as the run: applied at once
// when the run starts right after the watermark with nothing marked above
// it, one by one otherwise (a replay, a gap, marks ahead); either way each
// is applied once, its record added once, and the lease covers the least
// of the run's total and what it has left.
func TestSettleLeaseRuns(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	credit(t, a, "u", 10*unit)
	credit(t, a, "v", 10*unit)
	takeLease(t, a, LeaseTake{User: "u", ID: "n1.1", Want: 100, Share: 1})
	takeLease(t, a, LeaseTake{User: "v", ID: "n1.1", Want: unit, Share: 1})
	run := func(user string, from, to int64) LeaseBatch {
		lb := LeaseBatch{User: user, Lease: "n1.1"}
		for q := from; q <= to; q++ { // records of different lengths, one empty
			rec := fmt.Appendf(nil, `{"r":"%s%d%s"}`, user, q, strings.Repeat("x", int(q%3)))
			if q == 15 {
				rec = nil
			}
			lb.Settlements = append(lb.Settlements, LeaseSettlement{Seq: q, Cost: money.Nanos(q), Record: rec})
		}
		return lb
	}
	steps := []struct {
		name  string
		b     []LeaseBatch
		want  []int64
		marks int64 // u's stored marks afterwards
		wm    string
	}{
		{"a run from the start", []LeaseBatch{run("u", 1, 5)}, []int64{5}, 0, "5"},
		{"a run over the watermark", []LeaseBatch{run("u", 4, 8)}, []int64{3}, 0, "8"},
		{"a run past a gap", []LeaseBatch{run("u", 11, 13)}, []int64{3}, 3, "8"},
		{"the gap, with marks ahead", []LeaseBatch{run("u", 9, 10)}, []int64{2}, 0, "13"},
		{"runs of two leases and one by one", []LeaseBatch{run("v", 1, 3), run("u", 14, 16),
			{User: "v", Lease: "n2.1", Settlements: []LeaseSettlement{{Seq: 2, Cost: 7, Record: []byte(`{"r":"w2"}`)},
				{Seq: 1, Cost: 9, Record: []byte(`{"r":"w1"}`)}}}}, []int64{3, 3, 2}, 0, "16"},
		{"a replay of it all", []LeaseBatch{run("u", 1, 16), run("v", 1, 3)}, []int64{0, 0}, 0, "16"},
	}
	for _, st := range steps {
		res, err := a.SettleLeases(ctx, st.b)
		if got := applied(res); err != nil || !slices.Equal(got, st.want) {
			t.Fatalf("%s: SettleLeases = %v, %v; want %v", st.name, got, err, st.want)
		}
		m, _ := rdb.HGetAll(ctx, leaseSeqKey("u", "n1.1")).Result()
		if int64(len(m)-1) != st.marks || m["wm"] != st.wm {
			t.Fatalf("%s: u's marks %v; want watermark %s and %d more", st.name, m, st.wm, st.marks)
		}
	}
	// u: 1..16 cost 136, of which the 100 lease covered 100; v: 1..3 (6)
	// from its lease, and 16 on lease n2.1, which Redis never had.
	wantRawHeld(t, a, "u", 10*unit-136, 0)
	wantRawHeld(t, a, "v", 10*unit-22, unit-6)
	got := streamRecords(t, rdb, "u", "v")
	var want []string
	for _, lb := range []LeaseBatch{run("u", 1, 16), run("v", 1, 3)} {
		for _, x := range lb.Settlements {
			want = append(want, string(x.Record))
		}
	}
	want = append(want, `{"r":"w1"}`, `{"r":"w2"}`)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("usage records:\n got %q\nwant %q", got, want)
	}
}

// streamRecords returns, sorted, every usage record in the streams of
// users' shards (each stream once), lone or in batch entries.
func streamRecords(t *testing.T, rdb *redis.Client, users ...string) []string {
	t.Helper()
	var got []string
	seen := map[string]bool{}
	for _, u := range users {
		stream := UsageStreamOf(u)
		if seen[stream] {
			continue
		}
		seen[stream] = true
		for _, m := range rdb.XRange(t.Context(), stream, "-", "+").Val() {
			if r, ok := m.Values[UsageField].(string); ok {
				got = append(got, r)
			} else {
				got = append(got, strings.Split(m.Values[UsageBatchField].(string), "\n")...)
			}
		}
	}
	slices.Sort(got)
	return got
}

// halfLeased is accounts with user u credited unit, half of it in lease
// n1.1.
func halfLeased(t *testing.T) (*Accounts, *redis.Client) {
	t.Helper()
	a, rdb := newTestAccounts(t)
	credit(t, a, "u", unit)
	takeLease(t, a, LeaseTake{User: "u", ID: "n1.1", Want: unit / 2, Share: 1})
	return a, rdb
}

// A batch whose record lengths do not add up to its records is refused
// before anything is written.
func TestSettleLeasesLengthsChecked(t *testing.T) {
	a, rdb := halfLeased(t)
	ctx := t.Context()
	s := []LeaseSettlement{{Seq: 1, Cost: 100, Record: []byte(`{"r":1}`)}, {Seq: 2, Cost: 200, Record: []byte(`{"r":2}`)}}
	keys, args, err := settleLeasesParams([]LeaseBatch{{User: "u", Lease: "n1.1", Settlements: s}}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	args[len(args)-2] = args[len(args)-2].(int) + 1 // the run's joined length
	if err := settleLeasesScript.Run(ctx, rdb, keys, args...).Err(); err == nil || !strings.Contains(err.Error(), "do not add up") {
		t.Fatalf("a batch with a wrong length: %v", err)
	}
	wantRawHeld(t, a, "u", unit, unit/2)
	if n, _ := UsageRecords(ctx, rdb); n != 0 {
		t.Fatalf("usage records = %d; want none", n)
	}
}

// A run is sent as a run; settlements out of order, or whose total would
// pass MaxNanos, one by one.
func TestAppendSettlements(t *testing.T) {
	s := func(costs ...money.Nanos) []LeaseSettlement {
		out := make([]LeaseSettlement, len(costs))
		for i, c := range costs {
			out[i] = LeaseSettlement{Seq: int64(i + 3), Cost: c, Record: make([]byte, i)}
		}
		return out
	}
	if got := appendSettlements(nil, s(5, 0, 7), 5); fmt.Sprint(got) != fmt.Sprint([]any{-3, int64(3), int64(12), 5, []byte("5 0 0 1 7 2 ")}) {
		t.Errorf("a run: %v", got)
	}
	swapped := s(5, 6)
	swapped[0].Seq, swapped[1].Seq = 4, 3
	for name, x := range map[string][]LeaseSettlement{"one": s(5), "out of order": swapped,
		"past MaxNanos": s(money.MaxNanos, 1)} {
		if got := appendSettlements(nil, x, 0); got[0] != len(x) {
			t.Errorf("%s: %v; want one by one", name, got)
		}
	}
}

// Many settlements applied ahead of a missing one are marked (more than
// the script reads at once), each applies once, and the missing one's
// arrival folds them all into the watermark.
func TestSettleLeaseManyMarks(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	credit(t, a, "u", 10*unit)
	takeLease(t, a, LeaseTake{User: "u", ID: "n1.1", Want: unit, Share: 1})
	rec := []byte(`{"request_id":"r"}`)
	var s []LeaseSettlement
	for q := int64(1200); q >= 2; q-- { // backwards, and 1 missing
		s = append(s, LeaseSettlement{Seq: q, Cost: 1, Record: rec})
	}
	for lo := 0; lo < len(s); lo += 300 { // batches of 300: the later ones meet many marks
		hi := min(lo+300, len(s))
		if n, err := a.SettleLease(ctx, "u", "n1.1", append(s[lo:hi:hi], s[lo])); err != nil || n != int64(hi-lo) {
			t.Fatalf("batch at %d: %d, %v; want %d (a repeat inside the batch counted once)", lo, n, err, hi-lo)
		}
	}
	if n, err := a.SettleLease(ctx, "u", "n1.1", s[:10]); err != nil || n != 0 {
		t.Fatalf("replay over many marks: %d, %v; want 0", n, err)
	}
	if m, _ := rdb.HLen(ctx, leaseSeqKey("u", "n1.1")).Result(); m != 1200 {
		t.Fatalf("marks = %d fields; want wm and 1,199 marks", m)
	}
	if n, err := a.SettleLease(ctx, "u", "n1.1", []LeaseSettlement{{Seq: 1, Cost: 1, Record: rec}}); err != nil || n != 1 {
		t.Fatalf("the missing one: %d, %v", n, err)
	}
	if m, _ := rdb.HGetAll(ctx, leaseSeqKey("u", "n1.1")).Result(); len(m) != 1 || m["wm"] != "1200" {
		t.Fatalf("sequence marks = %d fields (wm %s); want only wm 1200", len(m), m["wm"])
	}
	wantRawHeld(t, a, "u", 10*unit-1200, unit-1200)
}

// A lease whose node stops renewing it expires: the next script on the
// account releases it, and the balance is whole again.
func TestLeaseExpires(t *testing.T) {
	a, _ := newTestAccounts(t)
	credit(t, a, "u", unit)
	takeLease(t, a, LeaseTake{User: "u", ID: "dead.1", Want: unit, Share: 2, TTL: 50 * time.Millisecond})
	wantRawHeld(t, a, "u", unit, unit/2)
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Another node's take releases the expired lease first.
		g := takeLease(t, a, LeaseTake{User: "u", ID: "live.1", Want: 0, Share: 1})
		_ = g
		held := intField(a.rdb.HGet(t.Context(), acctKey("u"), "held").Val())
		if held == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead node's lease never expired: held %d", held)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st, _ := a.Leases(t.Context(), "u"); len(st.Leases) != 0 {
		t.Fatalf("leases left: %v", st.Leases)
	}
	// The per-request path releases them too.
	hash := putActiveKey(t, a, "sk-exp", "k1", "u")
	takeLease(t, a, LeaseTake{User: "u", ID: "dead.2", Want: unit, Share: 1, TTL: 50 * time.Millisecond})
	for {
		_, err := a.Authorize(t.Context(), AuthRequest{KeyHash: hash, Hold: unit, RequestID: "r1"})
		if err == nil {
			break
		}
		if !errors.Is(err, ErrInsufficientQuota) || time.Now().After(deadline) {
			t.Fatalf("Authorize after the lease's deadline: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A debit tells every node to give its lease back.
func TestDebitPublishesRecall(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ps := rdb.Subscribe(t.Context(), RecallChannel)
	defer ps.Close()
	if _, err := ps.Receive(t.Context()); err != nil {
		t.Fatal(err)
	}
	credit(t, a, "u", unit) // a credit: no recall
	if err := a.ApplyCredit(t.Context(), "u", 7, -unit/2); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-ps.Channel():
		if m.Payload != "u" {
			t.Fatalf("recall for %q; want u", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no recall notice after a debit")
	}
	select {
	case m := <-ps.Channel():
		t.Fatalf("a second notice: %v", m)
	default:
	}
}

// unit is one currency unit in nanos.
const unit money.Nanos = money.NanosPerUnit

// wantRawHeld checks the balance and everything held (leases included).
func wantRawHeld(t *testing.T, a *Accounts, user string, balance, held money.Nanos) {
	t.Helper()
	v, err := a.rdb.HMGet(t.Context(), acctKey(user), "balance", "held").Result()
	if err != nil {
		t.Fatal(err)
	}
	if b, h := money.Nanos(intField(v[0])), money.Nanos(intField(v[1])); b != balance || h != held {
		t.Fatalf("%s: balance %s held %s; want %s and %s", user, b, h, balance, held)
	}
	if _, h, _ := a.Balance(t.Context(), user); h != 0 && held != 0 && h > held {
		t.Fatalf("Balance's held %s is more than all held %s", h, held)
	}
}

// benchRecord is a usage record as the settlement benchmarks send it.
var benchRecord = []byte(`{"request_id":"req_bench","time":"2025-01-01T00:00:00Z","user":"bench","key_id":"key_bench",` +
	`"model":"gpt-4o","endpoint":"/v1/chat/completions","stream":false,"status":200,"outcome":"completed",` +
	`"input_tokens":1200,"cached_input_tokens":0,"output_tokens":350,"reasoning_tokens":0,` +
	`"cost":"0.006500000","currency":"USD","estimated":false,"duration_ms":812,"ttft_ms":0,"client_ip":"127.0.0.1"}`)

// BenchmarkSettleLease applies batches of settlements under one lease, as
// a gateway node's settlement workers do, and reports Redis's own CPU per
// settlement (INFO cpu): the share of a metered request that Redis pays.
func BenchmarkSettleLease(b *testing.B) {
	for _, n := range []int{1, 12, 64, 256} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			a, rdb := newTestAccounts(b)
			ctx := b.Context()
			if _, err := a.Credit(ctx, "bench", money.MaxNanos); err != nil {
				b.Fatal(err)
			}
			addr := rdb.Options().Addr
			batch := make([]LeaseSettlement, n)
			seq, lease := int64(0), 0
			cpu0 := redisCPU(b, addr)
			settled := 0
			for b.Loop() {
				if seq%1024 == 0 { // a fresh lease now and then, as a node takes them
					lease++
					seq = 0
					takeLease(b, a, LeaseTake{User: "bench", ID: fmt.Sprintf("n1.%d", lease), Want: money.MaxNanos / 4, Share: 1})
				}
				for i := range batch {
					seq++
					batch[i] = LeaseSettlement{Seq: seq, Cost: 6_500, Record: benchRecord}
				}
				if _, err := a.SettleLease(ctx, "bench", fmt.Sprintf("n1.%d", lease), batch); err != nil {
					b.Fatal(err)
				}
				settled += n
			}
			b.ReportMetric(float64(redisCPU(b, addr)-cpu0)/float64(time.Microsecond)/float64(settled), "redis-µs/settlement")
		})
	}
}

// BenchmarkSettleLeasesManyCustomers applies scripts that each settle one
// request of each of several customers of one shard, as a node's batch
// does when many customers' requests are spread over it (each lease has one
// settlement in the batch), and reports Redis's CPU per settlement.
func BenchmarkSettleLeasesManyCustomers(b *testing.B) {
	for _, leases := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("leases-per-script=%d", leases), func(b *testing.B) {
			a, rdb := newTestAccounts(b)
			ctx := b.Context()
			addr := rdb.Options().Addr
			// 256 customers, all of shard 0.
			var users []string
			for i := 0; len(users) < 256; i++ {
				if u := fmt.Sprintf("cust%d", i); shardOf(u) == 0 {
					users = append(users, u)
				}
			}
			for _, u := range users {
				if _, err := a.Credit(ctx, u, money.MaxNanos/1024); err != nil {
					b.Fatal(err)
				}
				takeLease(b, a, LeaseTake{User: u, ID: "n1.1", Want: money.MaxNanos / 4096, Share: 1})
			}
			seqs := make([]int64, len(users))
			next, settled := 0, 0
			batch := make([]LeaseBatch, leases)
			cpu0 := redisCPU(b, addr)
			for b.Loop() {
				for i := range batch {
					u := next % len(users)
					next++
					seqs[u]++
					batch[i] = LeaseBatch{User: users[u], Lease: "n1.1",
						Settlements: []LeaseSettlement{{Seq: seqs[u], Cost: 6_500, Record: benchRecord}}}
				}
				if _, err := a.SettleLeases(ctx, batch); err != nil {
					b.Fatal(err)
				}
				settled += leases
			}
			b.ReportMetric(float64(redisCPU(b, addr)-cpu0)/float64(time.Microsecond)/float64(settled), "redis-µs/settlement")
		})
	}
}

// BenchmarkSettleBatchManyCustomers settles node-sized batches (48
// settlements of 48 customers spread over every shard, one pipeline each)
// with one script per shard, as on a Redis Cluster, and with one script for
// the batch, and reports Redis's CPU per settlement.
func BenchmarkSettleBatchManyCustomers(b *testing.B) {
	for _, perShard := range []bool{true, false} {
		b.Run(fmt.Sprintf("script-per-shard=%t", perShard), func(b *testing.B) {
			a, rdb := newTestAccounts(b)
			ctx := b.Context()
			addr := rdb.Options().Addr
			users := leasedCustomers(b, a, 480)
			if err := settleLeasesScript.Load(ctx, rdb).Err(); err != nil {
				b.Fatal(err)
			}
			seqs := make([]int64, len(users))
			next, settled := 0, 0
			cpu0 := redisCPU(b, addr)
			for b.Loop() {
				var shards [UsageShards][]LeaseBatch
				for range 48 {
					u := next % len(users)
					next++
					seqs[u]++
					sh := shardOf(users[u])
					shards[sh] = append(shards[sh], LeaseBatch{User: users[u], Lease: "n1.1",
						Settlements: []LeaseSettlement{{Seq: seqs[u], Cost: 6_500, Record: benchRecord}}})
				}
				pipe := rdb.Pipeline()
				var all []LeaseBatch
				for _, lbs := range shards {
					if perShard && len(lbs) > 0 {
						a.SettleLeasesCmd(ctx, pipe, lbs, nil)
					}
					all = append(all, lbs...)
				}
				if !perShard {
					a.SettleLeasesCmd(ctx, pipe, all, nil)
				}
				if _, err := pipe.Exec(ctx); err != nil {
					b.Fatal(err)
				}
				settled += 48
			}
			b.ReportMetric(float64(redisCPU(b, addr)-cpu0)/float64(time.Microsecond)/float64(settled), "redis-µs/settlement")
		})
	}
}

// BenchmarkSettleLeasesPerLease settles scripts of 48 leases, each with
// k settlements, as a node's batch does when its customers' requests
// gather for a while (a busy customer has several in one batch), and
// reports Redis's CPU per settlement: what a lease's share of a script
// costs, spread over its settlements.
func BenchmarkSettleLeasesPerLease(b *testing.B) {
	for _, k := range []int{1, 2, 5, 10} {
		b.Run(fmt.Sprintf("settlements-per-lease=%d", k), func(b *testing.B) {
			a, rdb := newTestAccounts(b)
			ctx := b.Context()
			addr := rdb.Options().Addr
			users := leasedCustomers(b, a, 480)
			seqs := make([]int64, len(users))
			next, settled := 0, 0
			cpu0 := redisCPU(b, addr)
			for b.Loop() {
				batch := make([]LeaseBatch, 48)
				for i := range batch {
					u := next % len(users)
					next++
					batch[i] = LeaseBatch{User: users[u], Lease: "n1.1"}
					for range k {
						seqs[u]++
						batch[i].Settlements = append(batch[i].Settlements, LeaseSettlement{Seq: seqs[u], Cost: 6_500, Record: benchRecord})
					}
				}
				if _, err := a.SettleLeases(ctx, batch); err != nil {
					b.Fatal(err)
				}
				settled += len(batch) * k
			}
			b.ReportMetric(float64(redisCPU(b, addr)-cpu0)/float64(time.Microsecond)/float64(settled), "redis-µs/settlement")
		})
	}
}

// leasedCustomers credits n customers and takes lease n1.1 of each.
func leasedCustomers(b *testing.B, a *Accounts, n int) []string {
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("cust%d", i)
		if _, err := a.Credit(b.Context(), users[i], money.MaxNanos/1024); err != nil {
			b.Fatal(err)
		}
		takeLease(b, a, LeaseTake{User: users[i], ID: "n1.1", Want: money.MaxNanos / 4096, Share: 1})
	}
	return users
}

// redisCPU is the CPU time redis-server at addr has used.
func redisCPU(tb testing.TB, addr string) time.Duration {
	tb.Helper()
	info, err := testredis.Info(addr, "cpu")
	if err != nil {
		tb.Fatal(err)
	}
	var d time.Duration
	for _, k := range []string{"used_cpu_sys", "used_cpu_user"} {
		s, err := strconv.ParseFloat(info[k], 64)
		if err != nil {
			tb.Fatalf("INFO cpu %s = %q", k, info[k])
		}
		d += time.Duration(s * float64(time.Second))
	}
	return d
}

// An empty record still takes its own line of the batch: the records after
// it reach the stream whole.
func TestSettleLeasesEmptyRecord(t *testing.T) {
	a, rdb := halfLeased(t)
	ctx := t.Context()
	if n, err := a.SettleLease(ctx, "u", "n1.1", []LeaseSettlement{{Seq: 1, Cost: 1, Record: nil}}); err != nil || n != 1 {
		t.Fatalf("first: %d, %v", n, err)
	}
	n, err := a.SettleLease(ctx, "u", "n1.1", []LeaseSettlement{{Seq: 1, Cost: 1}, {Seq: 2, Cost: 1, Record: []byte(`{"a":1}`)}})
	if err != nil || n != 1 {
		t.Fatalf("second: %d, %v", n, err)
	}
	msgs := rdb.XRange(ctx, UsageStreamOf("u"), "-", "+").Val()
	if got := msgs[len(msgs)-1].Values[UsageField]; got != `{"a":1}` {
		t.Fatalf("last record = %q; want {\"a\":1}", got)
	}
}

// A script cut short at the usage entry (here the stream key is of the
// wrong type) has written nothing: the retry debits and records once.
func TestSettleLeasesRecordsFirst(t *testing.T) {
	a, rdb := halfLeased(t)
	ctx := t.Context()
	s := []LeaseSettlement{{Seq: 1, Cost: 100, Record: []byte(`{"request_id":"r1"}`)},
		{Seq: 2, Cost: 200, Record: []byte(`{"request_id":"r2"}`)}}
	if err := rdb.Set(ctx, UsageStreamOf("u"), "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SettleLease(ctx, "u", "n1.1", s); err == nil {
		t.Fatal("a settlement whose usage entry failed reported success")
	}
	wantRawHeld(t, a, "u", unit, unit/2)
	if wm := rdb.HGet(ctx, leaseSeqKey("u", "n1.1"), "wm").Val(); wm != "" {
		t.Fatalf("watermark %q written by a failed script", wm)
	}
	rdb.Del(ctx, UsageStreamOf("u"))
	if n, err := a.SettleLease(ctx, "u", "n1.1", s); err != nil || n != 2 {
		t.Fatalf("retry: %d, %v", n, err)
	}
	wantRawHeld(t, a, "u", unit-300, unit/2-300)
	if n, _ := UsageRecords(ctx, rdb); n != 2 {
		t.Fatalf("usage records = %d; want 2", n)
	}
}

// On a Redis that is not a cluster, one script settles leases of several
// shards, in any order: each settlement is applied once, and the records
// make one entry of the first lease's shard's stream (the flusher reads
// every shard's). A usage entry that fails leaves every lease undebited.
func TestSettleLeasesMixedShards(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	if !a.MixesShards() {
		t.Fatal("a single Redis refuses leases of several shards in one script")
	}
	// u1 and u3 share a shard, u2 is on another.
	var u1, u2, u3 string
	for i := 0; u3 == ""; i++ {
		u := fmt.Sprintf("mix%d", i)
		switch {
		case u1 == "":
			u1 = u
		case u2 == "" && shardOf(u) != shardOf(u1):
			u2 = u
		case u2 != "" && shardOf(u) == shardOf(u1):
			u3 = u
		}
	}
	for _, u := range []string{u1, u2, u3} {
		credit(t, a, u, unit)
		takeLease(t, a, LeaseTake{User: u, ID: "n1.1", Want: unit / 2, Share: 1})
	}
	rec := func(id string) []byte { return []byte(`{"request_id":"` + id + `"}`) }
	batch := []LeaseBatch{
		{User: u1, Lease: "n1.1", Settlements: []LeaseSettlement{{Seq: 1, Cost: 100, Record: rec("a1")}, {Seq: 2, Cost: 200, Record: rec("a2")}}},
		{User: u2, Lease: "n1.1", Settlements: []LeaseSettlement{{Seq: 1, Cost: 400, Record: rec("b1")}}},
		{User: u3, Lease: "n1.1", Settlements: []LeaseSettlement{{Seq: 1, Cost: 800, Record: rec("c1")}}},
	}

	// The usage entry fails: nothing is debited anywhere.
	if err := rdb.Set(ctx, UsageStreamOf(u1), "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SettleLeases(ctx, batch); err == nil {
		t.Fatal("a script whose usage entry failed reported success")
	}
	for _, u := range []string{u1, u2, u3} {
		wantRawHeld(t, a, u, unit, unit/2)
	}
	rdb.Del(ctx, UsageStreamOf(u1))

	for round, want := range [][]int64{{2, 1, 1}, {0, 0, 0}} { // then a replay
		n, err := a.SettleLeases(ctx, batch)
		if err != nil || !slices.Equal(applied(n), want) {
			t.Fatalf("round %d: applied %v, %v; want %v", round, n, err, want)
		}
	}
	// Old and new mixed: only the new are applied, and only their records
	// are added (cut out of the batch by their offsets).
	n, err := a.SettleLeases(ctx, []LeaseBatch{
		{User: u1, Lease: "n1.1", Settlements: []LeaseSettlement{{Seq: 2, Cost: 200, Record: rec("a2")}, {Seq: 3, Cost: 1, Record: rec("a3")}}},
		{User: u2, Lease: "n1.1", Settlements: []LeaseSettlement{{Seq: 1, Cost: 400, Record: rec("b1")}, {Seq: 2, Cost: 2, Record: rec("b2")}}},
	})
	if err != nil || !slices.Equal(applied(n), []int64{1, 1}) {
		t.Fatalf("old and new: applied %v, %v; want [1 1]", n, err)
	}
	wantRawHeld(t, a, u1, unit-301, unit/2-301)
	wantRawHeld(t, a, u2, unit-402, unit/2-402)
	wantRawHeld(t, a, u3, unit-800, unit/2-800)
	var got []string
	for _, stream := range UsageStreams {
		for _, m := range rdb.XRange(ctx, stream, "-", "+").Val() {
			if stream != UsageStreamOf(u1) {
				t.Fatalf("an entry in %s: %v", stream, m.Values)
			}
			for _, line := range strings.Split(m.Values[UsageBatchField].(string), "\n") {
				var r struct {
					ID string `json:"request_id"`
				}
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatalf("entry %v: %v", m.Values, err)
				}
				got = append(got, r.ID)
			}
		}
	}
	if want := []string{"a1", "a2", "b1", "c1", "a3", "b2"}; !slices.Equal(got, want) {
		t.Fatalf("the usage stream holds %v; want %v, once each", got, want)
	}
}

// A caller's room takes a script's records joined (with a quarter more
// room), is reused by the next call that fits in it (the same memory, the
// new records), grows for one that does not, and is left alone for one
// larger than maxRoom.
func TestSettleLeasesParamsRoom(t *testing.T) {
	batchOf := func(n, size int) []LeaseBatch {
		s := make([]LeaseSettlement, n)
		for i := range s {
			s[i] = LeaseSettlement{Seq: int64(i + 1), Cost: 1, Record: bytes.Repeat([]byte{byte('a' + i%26)}, size)}
		}
		return []LeaseBatch{{User: "u", Lease: "n1.1", Settlements: s}}
	}
	joined := func(args []any) []byte { return args[2].([]byte) }
	var room []byte
	_, args, err := settleLeasesParams(batchOf(4, 100), true, &room)
	if err != nil || len(room) != 0 || cap(room) != 4*101*5/4 || &joined(args)[0] != &room[:1][0] {
		t.Fatalf("first call: room of %d, %v", cap(room), err)
	}
	first := &room[:1][0]
	_, args, err = settleLeasesParams(batchOf(2, 50), true, &room)
	if err != nil || &room[:1][0] != first || &joined(args)[0] != first || string(joined(args)) != strings.Repeat("a", 50)+"\n"+strings.Repeat("b", 50) {
		t.Fatalf("a smaller call did not reuse the room: %q, %v", joined(args), err)
	}
	if _, _, err = settleLeasesParams(batchOf(8, 100), true, &room); err != nil || cap(room) != 8*101*5/4 {
		t.Fatalf("a larger call: room of %d, %v", cap(room), err)
	}
	kept := cap(room)
	if _, args, err = settleLeasesParams(batchOf(2, maxRoom), true, &room); err != nil || cap(room) != kept || len(joined(args)) != 2*maxRoom+1 {
		t.Fatalf("a call beyond maxRoom: room of %d, %v", cap(room), err)
	}
}

// applied is how many settlements each lease of a SettleLeases call
// applied.
func applied(res []LeaseSettled) []int64 {
	out := make([]int64, 0, len(res))
	for _, r := range res {
		out = append(out, r.Applied)
	}
	return out
}

// A settle script renews the leases it is asked to: the deadline moves to
// Redis's now plus the renewal, but never for a lease that expired, was
// returned, or was spent whole by the settlements themselves.
func TestSettleLeasesRenews(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	credit(t, a, "u", 10*unit)
	rec := []byte(`{"request_id":"r"}`)
	deadline := func(id string) (float64, bool) {
		d, err := rdb.ZScore(ctx, leaseDeadlinesKey("u"), id).Result()
		return d, err == nil
	}
	nowMS := func() float64 {
		tm, err := rdb.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return float64(tm.UnixMilli())
	}
	seq := map[string]int64{}
	settle := func(id string, cost money.Nanos, renew time.Duration) LeaseSettled {
		t.Helper()
		seq[id]++
		res, err := a.SettleLeases(ctx, []LeaseBatch{{User: "u", Lease: id, Renew: renew,
			Settlements: []LeaseSettlement{{Seq: seq[id], Cost: cost, Record: rec}}}})
		if err != nil || len(res) != 1 || res[0].Applied != 1 {
			t.Fatalf("settling %s: %v, %v", id, res, err)
		}
		return res[0]
	}

	takeLease(t, a, LeaseTake{User: "u", ID: "n1.1", Want: unit, Share: 1, TTL: 10 * time.Second})
	d0, _ := deadline("n1.1")
	if r := settle("n1.1", 1, 0); r.Renewed {
		t.Fatal("renewed without a renewal asked for")
	}
	if d, _ := deadline("n1.1"); d != d0 {
		t.Fatalf("deadline moved from %v to %v without a renewal", d0, d)
	}
	before := nowMS()
	if r := settle("n1.1", 1, time.Hour); !r.Renewed {
		t.Fatal("a live lease was not renewed")
	}
	if d, _ := deadline("n1.1"); d < before+float64(time.Hour.Milliseconds()) || d > nowMS()+float64(time.Hour.Milliseconds()) {
		t.Fatalf("deadline %v after a renewal of an hour at %v", d, before)
	}

	// Expired (its deadline passed, no script has dropped it yet): stays
	// expired.
	past := nowMS() - 1000
	rdb.ZAdd(ctx, leaseDeadlinesKey("u"), redis.Z{Score: past, Member: "n1.1"})
	if r := settle("n1.1", 1, time.Hour); r.Renewed {
		t.Fatal("an expired lease was renewed")
	}
	if d, _ := deadline("n1.1"); d != past {
		t.Fatalf("expired lease's deadline %v, want %v", d, past)
	}

	// Returned: nothing to renew, and no deadline comes back.
	takeLease(t, a, LeaseTake{User: "u", ID: "n1.2", Want: unit, Share: 1, TTL: 10 * time.Second})
	if _, err := a.ReturnLease(ctx, "u", "n1.2", -1); err != nil {
		t.Fatal(err)
	}
	if r := settle("n1.2", 1, time.Hour); r.Renewed {
		t.Fatal("a returned lease was renewed")
	}
	if _, ok := deadline("n1.2"); ok {
		t.Fatal("a returned lease has a deadline again")
	}

	// Spent whole by the settlement: gone, not renewed.
	g := takeLease(t, a, LeaseTake{User: "u", ID: "n1.3", Want: unit / 10, Share: 1, TTL: 10 * time.Second})
	if r := settle("n1.3", g.Total, time.Hour); r.Renewed {
		t.Fatal("a lease spent whole was renewed")
	}
	if _, ok := deadline("n1.3"); ok {
		t.Fatal("a lease spent whole kept its deadline")
	}

	if _, err := a.SettleLeases(ctx, []LeaseBatch{{User: "u", Lease: "n1.1", Renew: 25 * time.Hour,
		Settlements: []LeaseSettlement{{Seq: 99, Cost: 1, Record: rec}}}}); err == nil {
		t.Fatal("a renewal of 25 hours was taken")
	}
}
