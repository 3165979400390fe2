package billing

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// A balance lease is a slice of an account's available balance that one
// node reserved in Redis, so that it can admit the account's requests
// from memory. A lease is reserved like a hold (it is counted in the
// account's held), so balance − held ≥ 0 holds on any number of nodes:
// concurrent requests can still never overdraw. Each lease has an ID
// (one per node and generation), an amount left and a deadline; a script
// that touches the account first releases the leases of other nodes
// whose deadline has passed.

// ErrLeaseLost is TakeLease's answer when the lease to refill is no longer
// in Redis: it expired, was released, or Redis lost its data. The node
// must forget it and take a new one.
var ErrLeaseLost = errors.New("balance lease no longer in redis")

// dropExpiredLeasesLua is Lua that releases (at most 64 of) the account's
// leases whose deadline has passed: their amount leaves held. acct, leases
// and deadlines name the KEYS entries (e.g. "KEYS[1]") of the account, its
// leases and their deadlines. Now is Redis' own clock in ms, so every
// node's leases expire by one clock.
func dropExpiredLeasesLua(acct, leases, deadlines string) string {
	return `
local lt = redis.call('TIME')
local lnow = tonumber(lt[1]) * 1000 + math.floor(tonumber(lt[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', ` + deadlines + `, '-inf', lnow, 'LIMIT', 0, 64)) do
  local amt = redis.call('HGET', ` + leases + `, id)
  if amt and tonumber(amt) > 0 then redis.call('HINCRBY', ` + acct + `, 'held', '-' .. amt) end
  redis.call('HDEL', ` + leases + `, id)
  redis.call('ZREM', ` + deadlines + `, id)
end
`
}

// takeLeaseScript reserves up to want nanos of the available balance for
// lease ARGV[1], refilling it (ARGV[5] "refill": it must still exist) or
// starting it ("new"). The grant is at most the available balance divided
// by ARGV[4] (the share one node may take), and nothing when that is below
// ARGV[3]. The lease's deadline becomes now + ARGV[6] ms, also when
// nothing more was granted.
//
// KEYS: acct, leases, lease deadlines. Returns {"ok", granted, lease
// amount now}, {"lost"} for a refill of a lease Redis no longer has, or
// {"none"} when the account does not exist.
var takeLeaseScript = redis.NewScript(dropExpiredLeasesLua("KEYS[1]", "KEYS[2]", "KEYS[3]") + `
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if ARGV[5] == 'refill' and not cur then return {'lost'} end
local v = redis.call('HMGET', KEYS[1], 'balance', 'held')
if not v[1] then return {'none'} end
local avail = (tonumber(v[1]) or 0) - (tonumber(v[2]) or 0)
local grant = math.min(tonumber(ARGV[2]), math.floor(avail / tonumber(ARGV[4])))
if grant < tonumber(ARGV[3]) then grant = 0 end
local total = tonumber(cur or '0') or 0
if grant > 0 then
  local g = string.format('%.0f', grant)
  redis.call('HINCRBY', KEYS[1], 'held', g)
  total = redis.call('HINCRBY', KEYS[2], ARGV[1], g)
end
if cur or grant > 0 then redis.call('ZADD', KEYS[3], lnow + tonumber(ARGV[6]), ARGV[1]) end
return {'ok', string.format('%.0f', grant), tostring(total)}
`)

// returnLeaseScript gives back up to ARGV[2] nanos of lease ARGV[1] ("all"
// for the whole lease): they leave held. A lease left at zero or below is
// removed. KEYS: acct, leases, lease deadlines. Returns what was given back.
var returnLeaseScript = redis.NewScript(`
local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') or 0
local x = cur
if ARGV[2] ~= 'all' then x = math.min(cur, tonumber(ARGV[2])) end
if x > 0 then
  local s = string.format('%.0f', x)
  redis.call('HINCRBY', KEYS[1], 'held', '-' .. s)
  cur = redis.call('HINCRBY', KEYS[2], ARGV[1], '-' .. s)
end
if cur <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return string.format('%.0f', math.max(x, 0))
`)

// LeaseGrant is TakeLease's answer.
type LeaseGrant struct {
	// Granted is what this call added to the lease (0: the available
	// balance was too small to share).
	Granted money.Nanos
	// Total is the lease's amount in Redis after the call.
	Total money.Nanos
}

// LeaseTake asks TakeLease for a lease.
type LeaseTake struct {
	// User owns the account; ID names the lease (node and generation).
	User, ID string
	// Want is the most to add; Min is the least worth adding (a smaller
	// grant is none).
	Want, Min money.Nanos
	// Share divides the available balance: one lease takes at most
	// available / Share (the number of nodes expected to lease at once).
	Share int64
	// TTL is how long the lease lives unless renewed by the next take.
	TTL time.Duration
	// Refill says the lease must exist already (a refill or renewal);
	// when Redis has lost it, TakeLease answers ErrLeaseLost.
	Refill bool
}

// TakeLease reserves part of the account's available balance for a lease
// (or renews and tops up one), in one round trip.
func (a *Accounts) TakeLease(ctx context.Context, t LeaseTake) (LeaseGrant, error) {
	if t.Want < 0 || t.Min < 0 || t.Want > money.MaxNanos {
		return LeaseGrant{}, fmt.Errorf("lease: want %d, min %d out of range", t.Want, t.Min)
	}
	mode := "new"
	if t.Refill {
		mode = "refill"
	}
	res, err := takeLeaseScript.Run(ctx, a.rdb, leaseKeys(t.User), t.ID, int64(t.Want), int64(t.Min),
		max(t.Share, 1), mode, t.TTL.Milliseconds()).StringSlice()
	if err != nil {
		return LeaseGrant{}, err
	}
	switch res[0] {
	case "ok":
		return LeaseGrant{Granted: money.Nanos(atoi(res[1])), Total: money.Nanos(atoi(res[2]))}, nil
	case "lost":
		return LeaseGrant{}, ErrLeaseLost
	default:
		return LeaseGrant{}, ErrNoAccount
	}
}

// ErrNoAccount is the answer for an account Redis does not have.
var ErrNoAccount = errors.New("no such account in redis")

// ReturnLease gives back up to amount of lease id of user (all of it when
// amount < 0) and reports what was given back.
func (a *Accounts) ReturnLease(ctx context.Context, user, id string, amount money.Nanos) (money.Nanos, error) {
	arg := "all"
	if amount >= 0 {
		arg = strconv.FormatInt(int64(amount), 10)
	}
	n, err := returnLeaseScript.Run(ctx, a.rdb, leaseKeys(user), id, arg).Text()
	if err != nil {
		return 0, err
	}
	return money.Nanos(atoi(n)), nil
}

// LeaseState is what Redis holds of an account's leases.
type LeaseState struct {
	// Leases maps each live lease ID to its amount.
	Leases map[string]money.Nanos
}

// Leases returns the leases Redis holds on user's account.
func (a *Accounts) Leases(ctx context.Context, user string) (LeaseState, error) {
	m, err := a.rdb.HGetAll(ctx, leasesKey(user)).Result()
	if err != nil {
		return LeaseState{}, err
	}
	st := LeaseState{Leases: make(map[string]money.Nanos, len(m))}
	for id, v := range m {
		st.Leases[id] = money.Nanos(atoi(v))
	}
	return st, nil
}

func leaseKeys(user string) []string {
	return []string{acctKey(user), leasesKey(user), leaseDeadlinesKey(user)}
}
