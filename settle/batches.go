package settle

// How a settle worker lays out a batch: its lease settlements grouped by
// lease, in order, cut into scripts, in memory kept from batch to batch.

import (
	"sort"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// scratch is a worker's memory for applying its batches, kept from one
// batch to the next: a batch of thousands of settlements would otherwise
// take a few MiB of fresh memory each time (its scripts' records joined,
// and its commands), which the Go runtime returns to the system between
// batches and takes back, page fault by page fault, at the next.
type scratch struct {
	cmds   []*redis.Cmd
	errs   []error
	rooms  [][]byte
	groups []*leaseGroup // the last batch's, then spares up to cap
	index  map[[2]string]*leaseGroup
}

// take returns room for the commands and errors of a batch of n, zeroed.
func (sc *scratch) take(n int) ([]*redis.Cmd, []error) {
	if cap(sc.cmds) < n {
		sc.cmds, sc.errs = make([]*redis.Cmd, n), make([]error, n)
	}
	return sc.cmds[:n], sc.errs[:n]
}

// room is the buffer for the records of a batch's script i (see
// billing.Accounts.SettleLeasesCmd).
func (sc *scratch) room(i int) *[]byte {
	for len(sc.rooms) <= i {
		sc.rooms = append(sc.rooms, nil)
	}
	return &sc.rooms[i]
}

// clear drops the batch's commands, errors, settlements and records
// (zeroed in the rooms), so that none outlives it; the memory is kept,
// but for a group's lists far longer than this batch needed: a customer
// who once filled a batch alone should not leave a batch's worth of
// memory at every position.
func (sc *scratch) clear() {
	clear(sc.cmds)
	clear(sc.errs)
	clear(sc.index)
	for i := range sc.rooms {
		clear(sc.rooms[i][:cap(sc.rooms[i])])
	}
	for _, g := range sc.groups {
		used := len(g.items)
		clear(g.items)
		g.user, g.lease, g.jobs, g.items = "", "", g.jobs[:0], g.items[:0]
		if cap(g.items) > 4*max(used, 64) {
			g.jobs, g.items = nil, nil
		}
	}
}

// leaseGroup is the settlements of one batch under one lease.
type leaseGroup struct {
	user, lease string
	jobs        []int // indexes in the batch
	items       []billing.LeaseSettlement
}

// leaseGroups groups the batch's settlements under leases by lease, in
// sc's memory: the groups, with their slices, are those of sc's last
// batch, emptied.
func (sc *scratch) leaseGroups(batch []job) []*leaseGroup {
	if sc.index == nil {
		sc.index = make(map[[2]string]*leaseGroup)
	}
	index, groups := sc.index, sc.groups[:0]
	for i, j := range batch {
		if j.rec.Lease == "" {
			continue
		}
		k := [2]string{j.rec.User, j.rec.Lease}
		g := index[k]
		if g == nil {
			if n := len(groups); n < cap(groups) {
				g = groups[:n+1][n] // a spare from an earlier batch, or nil
			}
			if g == nil {
				g = &leaseGroup{}
			}
			g.user, g.lease = j.rec.User, j.rec.Lease
			groups, index[k] = append(groups, g), g
		}
		g.jobs = append(g.jobs, i)
		g.items = append(g.items, j.rec.leaseSettlement())
	}
	sc.groups = groups
	for _, g := range groups {
		g.sortBySeq()
	}
	return groups
}

// sortBySeq puts g's settlements in the order of their numbers: requests
// finish and queue their settlements in about that order, and the settle
// script takes a run of numbers at once (see billing.SettleLeases), so a
// few swapped neighbours would cost it a run, and a cut between scripts
// in the middle of a disorder would leave marks.
func (g *leaseGroup) sortBySeq() {
	if s := (groupBySeq{g}); !sort.IsSorted(s) {
		sort.Sort(s)
	}
}

// groupBySeq sorts a lease group's settlements, and their jobs with them.
type groupBySeq struct{ g *leaseGroup }

func (s groupBySeq) Len() int           { return len(s.g.items) }
func (s groupBySeq) Less(i, j int) bool { return s.g.items[i].Seq < s.g.items[j].Seq }
func (s groupBySeq) Swap(i, j int) {
	s.g.items[i], s.g.items[j] = s.g.items[j], s.g.items[i]
	s.g.jobs[i], s.g.jobs[j] = s.g.jobs[j], s.g.jobs[i]
}

// shardGroup is lease groups of one batch that one script settles.
type shardGroup struct {
	groups  []*leaseGroup
	batches []billing.LeaseBatch
}

// first is the batch index of the group's first settlement, where its
// command is kept.
func (sh *shardGroup) first() int { return sh.groups[0].jobs[0] }

// byShard gathers lease groups by their accounts' shard (the usage stream
// they write), in order: on a Redis Cluster, a script's keys must share a
// hash slot.
func byShard(groups []*leaseGroup) [][]*leaseGroup {
	var shards [][]*leaseGroup
	index := make(map[string]int)
	for _, g := range groups {
		stream := billing.UsageStreamOf(g.user)
		i, ok := index[stream]
		if !ok {
			i = len(shards)
			index[stream] = i
			shards = append(shards, nil)
		}
		shards[i] = append(shards[i], g)
	}
	return shards
}

// splitScripts cuts each set of lease groups into scripts of at most max
// settlements, in order, cutting a lease group across two scripts where it
// must: one long script would keep every other Redis client waiting, and a
// lease's settlements apply in any order and any number of scripts.
func splitScripts(shards [][]*leaseGroup, max int) []*shardGroup {
	var out []*shardGroup
	for _, groups := range shards {
		cur, room := &shardGroup{}, max
		for _, g := range groups {
			for len(g.jobs) > 0 {
				n := min(len(g.jobs), room)
				part := &leaseGroup{user: g.user, lease: g.lease, jobs: g.jobs[:n:n], items: g.items[:n:n]}
				g = &leaseGroup{user: g.user, lease: g.lease, jobs: g.jobs[n:], items: g.items[n:]}
				cur.groups = append(cur.groups, part)
				cur.batches = append(cur.batches, billing.LeaseBatch{User: part.user, Lease: part.lease, Settlements: part.items})
				if room -= n; room == 0 {
					out = append(out, cur)
					cur, room = &shardGroup{}, max
				}
			}
		}
		if len(cur.groups) > 0 {
			out = append(out, cur)
		}
	}
	return out
}
