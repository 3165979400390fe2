package billing

// This file settles requests admitted from balance leases: the script
// that applies a batch of settlements exactly once, and the Go side that
// lays a batch out for it.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// settleLeasesScript applies batches of settlements of requests admitted
// from leases, in one script: a node's batch costs one script, however
// many customers it holds (on a Redis Cluster, one per shard of accounts,
// whose keys and usage stream share a hash slot). Each settlement is
// applied once: it has a sequence number in its lease, and a number at or
// below the lease's watermark, or already marked, was applied before (a
// replay changes nothing). For each
// new one: the balance is debited its cost, the part of the cost the lease
// still covers leaves the lease and held, and its usage record goes to the
// usage stream: one entry for all the script's records (a batch, one per
// line), so the stream and the ledger flusher pay per batch, not per
// record. A lease Redis no longer has (expired, returned) covers
// nothing: the cost is debited from the balance alone. A lease spent to
// zero is removed (its node takes a new one).
//
// The marks are read once per lease (while they are few) and written once:
// numbers applied in any order cost no command each, and those the
// watermark reaches are never stored. A lease's debits are summed and
// applied in one HINCRBY, flushed before the sum could leave the integers
// a Lua number holds exactly.
//
// A lease may be renewed on the way: its deadline moves to Redis's now
// plus the renewal asked for, if the lease is still there and its
// deadline has not passed (an expired lease is never brought back). So
// a node whose customers keep it settling needs no renewal script of its
// own.
//
// A lease's settlements numbered in a run (n, n+1, …, in order), the
// usual case, are sent as the run: when it starts right after the
// watermark and nothing above it is marked, all of it is new, and the
// script applies its total at once, with no work per settlement (the
// cover a lease gives a run is the least of the run's total and the
// lease). Otherwise the run's costs and record lengths, sent along, are
// taken one by one.
//
// KEYS: the usage stream (the first lease's shard's), then for each lease:
// acct, leases, lease deadlines, the lease's sequence marks. ARGV: the stream's record field
// and batch field, every settlement's record joined by newlines (the batch
// entry itself when all are new: Lua builds no string), then for each
// lease: its id, the renewal in ms (0: none), then either the number n of
// its settlements and n times (sequence, −cost, the record's length), or,
// for a run, −n, the first sequence, the run's total cost (at most
// 2⁵³ − 1), the length of its records joined, and "cost length " for each
// settlement. Returns, per lease, the number applied and 1 if it was
// renewed (else 0).
var settleLeasesScript = redis.NewScript(`
local all = ARGV[3]
local at, total, nfresh, spans = 1, 0, 0, {}
local now -- Redis's clock in ms, read once a renewal needs it
-- plan reads one lease's state and works out its writes; nothing is
-- written until every lease is planned and the usage entry is added.
local function plan(k, id, a, n)
  local mk = KEYS[k + 3]
  local wm = tonumber(redis.call('HGET', mk, 'wm') or '0') or 0
  local nmarks = redis.call('HLEN', mk) - 1
  local lease = tonumber(redis.call('HGET', KEYS[k + 1], id) or '0') or 0
  local p = {k = k, id = id, mk = mk, applied = 0, covered = 0, debits = {}, drop = {}, add = {}, live = lease > 0, renewed = 0}
  local first = 0
  if n < 0 then
    n, first = -n, tonumber(ARGV[a])
    local sum, span = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    if first == wm + 1 and nmarks <= 0 and sum <= 9007199254740991 then
      -- A run right after the watermark, nothing marked above it: all new.
      spans[#spans + 1] = {at, span}
      at, total, nfresh = at + span + 1, total + n, nfresh + n
      if sum > 0 then p.debits[1] = sum end
      p.covered = math.max(math.min(sum, lease), 0)
      p.applied, p.wm = n, wm + n
      return p
    end
  end
  -- The marks stored before (numbers applied above the watermark): read
  -- at once when they are few, asked one by one when many.
  local stored, many = {}, nmarks > 256
  if nmarks > 0 and not many then
    for _, f in ipairs(redis.call('HKEYS', mk)) do
      if f ~= 'wm' then stored[tonumber(f)] = true end
    end
  end
  local function marked(seq)
    if many then return redis.call('HEXISTS', mk, tostring(seq)) == 1 end
    return stored[seq] == true
  end
  local debit, seen = 0, {}
  local function take(seq, cost, len)
    local from = at
    at = at + len + 1
    total = total + 1
    if seq > wm and not seen[seq] and not marked(seq) then
      seen[seq] = true
      if debit + cost > 9007199254740991 then
        p.debits[#p.debits + 1] = debit
        debit = 0
      end
      debit = debit + cost
      local d = math.min(cost, lease - p.covered)
      if d > 0 then p.covered = p.covered + d end
      spans[#spans + 1] = {from, len}
      nfresh = nfresh + 1
      p.applied = p.applied + 1
    end
  end
  if first > 0 then
    local seq = first
    for cost, len in string.gmatch(ARGV[a + 3], '(%d+) (%d+) ') do
      take(seq, tonumber(cost), tonumber(len))
      seq = seq + 1
    end
  else
    for i = a, a + 3 * (n - 1), 3 do
      take(tonumber(ARGV[i]), -tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]))
    end
  end
  if debit > 0 then p.debits[#p.debits + 1] = debit end
  -- The watermark moves over every number now applied without a gap;
  -- stored marks it passes go, new numbers above it are marked.
  while true do
    local nx = wm + 1
    if seen[nx] then
      seen[nx] = nil
    elseif marked(nx) then
      p.drop[#p.drop + 1] = tostring(nx)
    else
      break
    end
    wm = nx
  end
  p.wm = wm
  for seq in pairs(seen) do
    p.add[#p.add + 1] = tostring(seq)
    p.add[#p.add + 1] = '1'
  end
  return p
end
local function apply(p)
  for _, d in ipairs(p.debits) do
    redis.call('HINCRBY', KEYS[p.k], 'balance', string.format('-%.0f', d))
  end
  if p.covered > 0 then
    local s = string.format('%.0f', p.covered)
    redis.call('HINCRBY', KEYS[p.k], 'held', '-' .. s)
    if redis.call('HINCRBY', KEYS[p.k + 1], p.id, '-' .. s) <= 0 then
      -- spent (or given back) whole: gone; its node takes a new one
      redis.call('HDEL', KEYS[p.k + 1], p.id)
      redis.call('ZREM', KEYS[p.k + 2], p.id)
      p.live = false
    end
  end
  if p.renew > 0 and p.live then
    if not now then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    local d = tonumber(redis.call('ZSCORE', KEYS[p.k + 2], p.id))
    if d and d >= now then
      redis.call('ZADD', KEYS[p.k + 2], now + p.renew, p.id)
      p.renewed = 1
    end
  end
  for j = 1, #p.drop, 1000 do
    redis.call('HDEL', p.mk, unpack(p.drop, j, math.min(j + 999, #p.drop)))
  end
  for j = 1, #p.add, 1000 do
    redis.call('HSET', p.mk, unpack(p.add, j, math.min(j + 999, #p.add)))
  end
  redis.call('HSET', p.mk, 'wm', p.wm)
  redis.call('PEXPIRE', p.mk, 604800000)
end
local plans, k, a = {}, 2, 4
while a <= #ARGV do
  local n = tonumber(ARGV[a + 2])
  local p = plan(k, ARGV[a], a + 3, n)
  p.renew = tonumber(ARGV[a + 1])
  plans[#plans + 1] = p
  if n < 0 then a = a + 7 else a = a + 3 + 3 * n end
  k = k + 4
end
-- Every record's length is accounted for (a line each), or nothing is
-- written: a layout that misplaced one would misplace the others.
if at ~= #all + 2 then
  return redis.error_reply('lease settlements: record lengths do not add up to the batch')
end
-- The usage records first: a script cut short after this leaves records
-- a replay adds again (the ledger keeps one per request), never a debit
-- whose record is lost.
if nfresh == 1 then
  redis.call('XADD', KEYS[1], '*', ARGV[1], string.sub(all, spans[1][1], spans[1][1] + spans[1][2] - 1))
elseif nfresh == total and total > 1 then
  redis.call('XADD', KEYS[1], '*', ARGV[2], all) -- all new: the batch as sent
elseif nfresh > 1 then
  local recs = {}
  for j, f in ipairs(spans) do recs[j] = string.sub(all, f[1], f[1] + f[2] - 1) end
  redis.call('XADD', KEYS[1], '*', ARGV[2], table.concat(recs, '\n'))
end
local out = {}
for _, p in ipairs(plans) do
  apply(p)
  out[#out + 1] = p.applied
  out[#out + 1] = p.renewed
end
return out
`)

// LeaseSettlement is one request's settlement under a lease.
type LeaseSettlement struct {
	// Seq numbers the settlement in its lease, from 1, with no gaps.
	Seq int64
	// Cost is what the account is debited.
	Cost money.Nanos
	// Record is the usage record's JSON.
	Record []byte
}

// SettleLease applies settlements of requests admitted from lease id of
// user in one script, each exactly once, and reports how many applied
// (the others had been before).
func (a *Accounts) SettleLease(ctx context.Context, user, id string, s []LeaseSettlement) (int64, error) {
	n, err := a.SettleLeases(ctx, []LeaseBatch{{User: user, Lease: id, Settlements: s}})
	if err != nil {
		return 0, err
	}
	return n[0].Applied, nil
}

// LeaseBatch is the settlements of one lease in a SettleLeases call.
type LeaseBatch struct {
	// User owns the account; Lease names the lease.
	User, Lease string
	// Settlements are applied in this order.
	Settlements []LeaseSettlement
	// Renew, when positive, moves the lease's deadline to Redis's now plus
	// Renew, if the lease is still there and has not expired.
	Renew time.Duration
}

// LeaseSettled is what a settle script did with one lease.
type LeaseSettled struct {
	// Applied counts the settlements applied now (the others had been
	// before).
	Applied int64
	// Renewed is set when the lease's deadline was moved (LeaseBatch.Renew).
	Renewed bool
}

// LeasesSettled reads the reply of SettleLeasesCmd's script, one entry
// per lease of the batch.
func LeasesSettled(cmd *redis.Cmd) ([]LeaseSettled, error) {
	n, err := cmd.Int64Slice()
	if err != nil {
		return nil, err
	}
	if len(n)%2 != 0 {
		return nil, fmt.Errorf("lease settlements: a reply of %d numbers", len(n))
	}
	out := make([]LeaseSettled, len(n)/2)
	for i := range out {
		out[i] = LeaseSettled{Applied: n[2*i], Renewed: n[2*i+1] == 1}
	}
	return out, nil
}

// SettleLeases applies the settlements of several leases in one script,
// and reports what it did with each lease. Their usage records make
// one entry of the first lease's shard's stream. On a Redis Cluster the
// leases must be on accounts of that one shard (one UsageStreamOf), whose
// keys share its hash slot; elsewhere (MixesShards) any mix is taken.
func (a *Accounts) SettleLeases(ctx context.Context, b []LeaseBatch) ([]LeaseSettled, error) {
	keys, args, err := settleLeasesParams(b, a.MixesShards(), nil)
	if err != nil {
		return nil, err
	}
	return LeasesSettled(settleLeasesScript.Run(ctx, a.rdb, keys, args...))
}

// SettleLeasesCmd queues SettleLeases's script on pipe by its SHA (a Redis
// without it answers NOSCRIPT; SettleLeases then loads it). LeasesSettled
// reads its reply.
//
// room, when not nil, is a buffer kept by the caller for the records
// joined, reused from one call to the next and grown as needed (up to
// maxRoom), so that a settle worker does not take fresh memory for every
// script: the caller must not pass it again before pipe has run.
func (a *Accounts) SettleLeasesCmd(ctx context.Context, pipe redis.Pipeliner, b []LeaseBatch, room *[]byte) *redis.Cmd {
	keys, args, err := settleLeasesParams(b, a.MixesShards(), room)
	if err != nil {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(err)
		return cmd
	}
	return settleLeasesScript.EvalSha(ctx, pipe, keys, args...)
}

// MixesShards reports whether one SettleLeases call may hold leases of
// several shards: everywhere but on a Redis Cluster, where a script's keys
// must share a hash slot. The flusher reads every shard's stream, so a
// record may go to any of them there.
func (a *Accounts) MixesShards() bool {
	_, cluster := a.rdb.(*redis.ClusterClient)
	return !cluster
}

// maxRenew bounds LeaseBatch.Renew: a lease outliving its node by more
// would keep money from the customer too long.
const maxRenew = 24 * time.Hour

// maxRoom is the largest buffer SettleLeasesCmd keeps in a caller's room:
// a script's records at the settle workers' usual size fit, and a rare
// larger one takes memory of its own.
const maxRoom = 1 << 20

// settleLeasesParams lays out b for settleLeasesScript; leases of several
// shards are refused unless mixes is set. The records are joined in
// *room when it is not nil (see SettleLeasesCmd).
func settleLeasesParams(b []LeaseBatch, mixes bool, room *[]byte) ([]string, []any, error) {
	if len(b) == 0 {
		return nil, nil, errors.New("lease settlements: none")
	}
	n, size := 0, 0
	for _, lb := range b {
		n += len(lb.Settlements)
		for _, x := range lb.Settlements {
			size += len(x.Record) + 1
		}
	}
	keys := make([]string, 0, 1+4*len(b))
	keys = append(keys, UsageStreamOf(b[0].User))
	var all []byte // the records joined by newlines, one line each (even empty)
	switch {
	case room != nil && cap(*room) >= size:
		all = (*room)[:0]
	case room != nil && size <= maxRoom:
		all = make([]byte, 0, min(size+size/4, maxRoom)) // room to grow a little
		*room = all
	default:
		all = make([]byte, 0, size)
	}
	joined := 0
	args := make([]any, 3, 3+2*len(b)+3*n)
	args[0], args[1] = UsageField, UsageBatchField
	shard := shardOf(b[0].User)
	for i, lb := range b {
		if !mixes && shardOf(lb.User) != shard {
			return nil, nil, fmt.Errorf("lease settlements: users %q and %q are on different shards", b[0].User, lb.User)
		}
		if len(lb.Settlements) == 0 {
			return nil, nil, fmt.Errorf("lease settlements: none for lease %q", lb.Lease)
		}
		// Every lease is read before any is written: one lease twice would
		// be applied twice.
		if slices.ContainsFunc(b[:i], func(o LeaseBatch) bool { return o.User == lb.User && o.Lease == lb.Lease }) {
			return nil, nil, fmt.Errorf("lease settlements: lease %q of %q given twice", lb.Lease, lb.User)
		}
		keys = append(keys, acctKey(lb.User), leasesKey(lb.User), leaseDeadlinesKey(lb.User), leaseSeqKey(lb.User, lb.Lease))
		from := len(all)
		if joined > 0 {
			from++ // the newline before the lease's first record
		}
		for _, x := range lb.Settlements {
			if x.Seq <= 0 || x.Cost < 0 || x.Cost > money.MaxNanos {
				return nil, nil, fmt.Errorf("lease settlement %d: cost %d out of range", x.Seq, x.Cost)
			}
			if bytes.IndexByte(x.Record, '\n') >= 0 {
				// A batch entry holds one record per line.
				return nil, nil, fmt.Errorf("lease settlement %d: record contains a newline", x.Seq)
			}
			if joined > 0 {
				all = append(all, '\n')
			}
			joined++
			all = append(all, x.Record...)
		}
		if lb.Renew < 0 || lb.Renew > maxRenew {
			return nil, nil, fmt.Errorf("lease settlements: renewal %v out of range", lb.Renew)
		}
		args = append(args, lb.Lease, lb.Renew.Milliseconds())
		args = appendSettlements(args, lb.Settlements, len(all)-from)
	}
	args[2] = all
	return keys, args, nil
}

// appendSettlements appends one lease's settlements to a settle script's
// arguments: as a run when their numbers follow each other (see
// settleLeasesScript), else one by one. span is the length of their
// records joined by newlines.
func appendSettlements(args []any, s []LeaseSettlement, span int) []any {
	run, sum := len(s) > 1, money.Nanos(0)
	for i, x := range s {
		if x.Seq != s[0].Seq+int64(i) || sum > money.MaxNanos-x.Cost {
			run = false
			break
		}
		sum += x.Cost
	}
	if run {
		details := make([]byte, 0, 16*len(s))
		for _, x := range s {
			details = strconv.AppendInt(details, int64(x.Cost), 10)
			details = append(details, ' ')
			details = strconv.AppendInt(details, int64(len(x.Record)), 10)
			details = append(details, ' ')
		}
		return append(args, -len(s), s[0].Seq, int64(sum), span, details)
	}
	args = append(args, len(s))
	for _, x := range s {
		args = append(args, x.Seq, strconv.FormatInt(-int64(x.Cost), 10), len(x.Record))
	}
	return args
}
