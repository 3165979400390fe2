package settle

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// splitScripts cuts lease groups into scripts of at most max settlements,
// in order, each settlement in exactly one script, a lease group cut only
// where a script is full.
func TestSplitScripts(t *testing.T) {
	next := 0
	group := func(user string, n int) *leaseGroup {
		g := &leaseGroup{user: user, lease: "node.1"}
		for range n {
			g.jobs = append(g.jobs, next)
			rec := leaseRecord(user, int64(next+1))
			g.items = append(g.items, rec.leaseSettlement())
			next++
		}
		return g
	}
	shards := [][]*leaseGroup{{group("a", 3), group("b", 600), group("c", 1)}, {group("d", 2)}}
	scripts := splitScripts(shards, 256)
	var got []string
	seen := 0
	for _, sh := range scripts {
		n := 0
		var users string
		for i, g := range sh.groups {
			if len(g.jobs) != len(g.items) || sh.batches[i].User != g.user || len(sh.batches[i].Settlements) != len(g.items) {
				t.Fatalf("script %v: group %d does not match its batch", users, i)
			}
			for k, j := range g.jobs {
				if j != seen || g.items[k].Seq != int64(j+1) {
					t.Fatalf("settlement %d (seq %d) where %d was next", j, g.items[k].Seq, seen)
				}
				seen++
			}
			n += len(g.jobs)
			users += fmt.Sprintf("%s%d ", g.user, len(g.jobs))
		}
		if n > 256 {
			t.Errorf("a script of %d settlements", n)
		}
		got = append(got, users)
	}
	if seen != next {
		t.Fatalf("%d of %d settlements in scripts", seen, next)
	}
	want := []string{"a3 b253 ", "b256 ", "b91 c1 ", "d2 "}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("scripts %q, want %q", got, want)
	}
}

// leaseGroups gathers each lease's settlements in the order of their
// numbers, each with its own job, however they were queued.
func TestLeaseGroupsSortBySeq(t *testing.T) {
	seqs := []int64{3, 1, 2, 7, 5, 6, 4}
	var batch []job
	for _, q := range seqs {
		batch = append(batch, job{rec: leaseRecord("a", q)}, job{rec: leaseRecord("b", 10-q)})
	}
	groups := new(scratch).leaseGroups(batch)
	if len(groups) != 2 {
		t.Fatalf("%d groups, want 2", len(groups))
	}
	for _, g := range groups {
		for k, j := range g.jobs {
			if batch[j].rec.Seq != g.items[k].Seq || batch[j].rec.User != g.user {
				t.Fatalf("%s: settlement %d has the job of %s's %d", g.user, g.items[k].Seq, batch[j].rec.User, batch[j].rec.Seq)
			}
			if k > 0 && g.items[k-1].Seq >= g.items[k].Seq {
				t.Fatalf("%s: settlements out of order: %v", g.user, g.items)
			}
		}
		if len(g.jobs) != len(seqs) {
			t.Fatalf("%s: %d settlements, want %d", g.user, len(g.jobs), len(seqs))
		}
	}
}

// A worker's scratch, reused from batch to batch, groups each batch as
// fresh memory would: no settlement, lease or job of an earlier batch is
// left in a group, and the buffers a script's records were joined in are
// kept for the next batch (emptied).
func TestScratchReusedAcrossBatches(t *testing.T) {
	batchOf := func(users string, per int) []job {
		var batch []job
		for q := 1; q <= per; q++ {
			for _, u := range users {
				batch = append(batch, job{rec: leaseRecord(string(u), int64(q))})
			}
		}
		return batch
	}
	var sc scratch
	for round, b := range []struct {
		users string
		per   int
	}{{"abcde", 3}, {"xy", 5}, {"pqrstuvw", 1}, {"a", 40}, {"abcde", 2}} {
		batch := batchOf(b.users, b.per)
		got := describeGroups(sc.leaseGroups(batch))
		if want := describeGroups(new(scratch).leaseGroups(batch)); got != want {
			t.Fatalf("round %d: reused scratch grouped\n%s\nfresh memory\n%s", round, got, want)
		}
		cmds, errs := sc.take(len(batch))
		if len(cmds) != len(batch) || len(errs) != len(batch) || cmds[0] != nil || errs[0] != nil {
			t.Fatalf("round %d: take(%d) gave %d commands and %d errors, first %v %v", round, len(batch), len(cmds), len(errs), cmds[0], errs[0])
		}
		cmds[0], errs[0] = redis.NewCmd(t.Context()), errors.New("x")
		room := sc.room(1)
		*room = append((*room)[:0], "records"...)
		sc.clear()
	}
	if len(sc.rooms) != 2 || cap(sc.rooms[1]) < len("records") {
		t.Fatalf("rooms not kept: %q", sc.rooms)
	}
	for _, g := range sc.groups[:cap(sc.groups)] {
		if g != nil && (g.user != "" || len(g.jobs) != 0 || len(g.items) != 0 || len(sc.index) != 0) {
			t.Fatalf("a cleared group still holds %+v", *g)
		}
	}
}

// A group's lists that have grown far beyond what a batch used are let
// go when it is cleared, and a room's records are zeroed: a customer who
// once filled a batch alone leaves no batch's worth of memory behind, and
// no record outlives its batch.
func TestScratchLetsGoOfOversizeGroups(t *testing.T) {
	var sc scratch
	var big []job
	for q := int64(1); q <= 1000; q++ {
		big = append(big, job{rec: leaseRecord("a", q)})
	}
	sc.leaseGroups(big)
	*sc.room(0) = append((*sc.room(0))[:0], "a record"...)
	sc.clear()
	if g := sc.groups[0]; cap(g.items) > 4*1000 || cap(g.items) < 1000 {
		t.Fatalf("a group that used its 1,000 settlements kept %d", cap(g.items))
	}
	if r := sc.rooms[0][:cap(sc.rooms[0])]; strings.Trim(string(r), "\x00") != "" {
		t.Fatalf("a room still holds %q", r)
	}
	sc.leaseGroups(big[:3])
	sc.clear()
	if g := sc.groups[0]; cap(g.items) != 0 || cap(g.jobs) != 0 {
		t.Fatalf("a group that used 3 settlements kept room for %d and %d", cap(g.items), cap(g.jobs))
	}
	if got := describeGroups(sc.leaseGroups(big[:5])); got != describeGroups(new(scratch).leaseGroups(big[:5])) {
		t.Fatalf("after letting go: %s", got)
	}
}

// describeGroups lists lease groups with their jobs and settlements.
func describeGroups(groups []*leaseGroup) string {
	var out string
	for _, g := range groups {
		out += fmt.Sprintf("%s/%s:%v:", g.user, g.lease, g.jobs)
		for _, it := range g.items {
			out += fmt.Sprintf("%d=%s ", it.Seq, it.Record)
		}
	}
	return out
}
