package settle

import (
	"fmt"
	"testing"
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
	groups := leaseGroups(batch)
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
