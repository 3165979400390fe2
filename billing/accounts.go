package billing

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors Authorize returns for a refused request.
var (
	ErrInvalidKey        = errors.New("invalid, revoked or expired API key")
	ErrModelNotAllowed   = errors.New("model not allowed for this key")
	ErrInsufficientQuota = errors.New("balance cannot cover this request")
)

// DefaultHoldTTL is how long a hold lives when its node never settles it
// (the node died mid-request). After it, the next request on the account
// releases it.
const DefaultHoldTTL = time.Hour

// Accounts is the live state of keys and balances in Redis. Every check and
// every money movement is one Lua script, so each is atomic and costs one
// round trip.
type Accounts struct {
	rdb redis.UniversalClient
	// HoldTTL bounds how long a hold can outlive its request.
	HoldTTL time.Duration
}

// NewAccounts returns Accounts on rdb.
func NewAccounts(rdb redis.UniversalClient) *Accounts {
	return &Accounts{rdb: rdb, HoldTTL: DefaultHoldTTL}
}

// Client returns the Redis client.
func (a *Accounts) Client() redis.UniversalClient { return a.rdb }

// KeyRecord is what Redis knows of an API key.
type KeyRecord struct {
	ID     string
	User   string
	Active bool
	// Models the key may use; empty means every priced model.
	Models []string
	// ExpiresAt is when the key stops working; zero means never.
	ExpiresAt time.Time
}

// PutKey stores (or replaces) the record of the key with the given hash.
func (a *Accounts) PutKey(ctx context.Context, hash string, k KeyRecord) error {
	return a.putKey(ctx, a.rdb, hash, k)
}

func (a *Accounts) putKey(ctx context.Context, c redis.Cmdable, hash string, k KeyRecord) error {
	status := "revoked"
	if k.Active {
		status = "active"
	}
	models := ""
	if len(k.Models) > 0 {
		models = "," + strings.Join(k.Models, ",") + ","
	}
	var exp int64
	if !k.ExpiresAt.IsZero() {
		exp = k.ExpiresAt.UnixMilli()
	}
	return c.HSet(ctx, keyRecordKey(hash),
		"id", k.ID, "user", k.User, "status", status, "models", models, "expires", exp).Err()
}

// RevokeKey marks the key revoked and tells every node at once.
func (a *Accounts) RevokeKey(ctx context.Context, hash string) error {
	pipe := a.rdb.TxPipeline()
	pipe.HSet(ctx, keyRecordKey(hash), "status", "revoked")
	pipe.Publish(ctx, RevocationChannel, hash)
	_, err := pipe.Exec(ctx)
	return err
}

// EnsureAccount creates the account of user with a zero balance if Redis
// has none.
func (a *Accounts) EnsureAccount(ctx context.Context, user string) error {
	pipe := a.rdb.Pipeline()
	pipe.HSetNX(ctx, acctKey(user), "balance", 0)
	pipe.HSetNX(ctx, acctKey(user), "held", 0)
	_, err := pipe.Exec(ctx)
	return err
}

// Credit adds amount (negative debits) to the balance of user and returns
// the new balance.
func (a *Accounts) Credit(ctx context.Context, user string, amount Nanos) (Nanos, error) {
	n, err := a.rdb.HIncrBy(ctx, acctKey(user), "balance", int64(amount)).Result()
	return Nanos(n), err
}

// Balance returns the balance of user and the sum of its live holds.
func (a *Accounts) Balance(ctx context.Context, user string) (balance, held Nanos, err error) {
	v, err := a.rdb.HMGet(ctx, acctKey(user), "balance", "held").Result()
	if err != nil {
		return 0, 0, err
	}
	return Nanos(intField(v[0])), Nanos(intField(v[1])), nil
}

func intField(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// AuthRequest asks to admit one request.
type AuthRequest struct {
	// KeyHash is HashKey of the presented secret.
	KeyHash string
	// Model is checked against the key's allowlist; empty skips the check.
	Model string
	// Hold is reserved from the balance when CheckOnly is false.
	Hold Nanos
	// RequestID names the hold.
	RequestID string
	// CheckOnly validates the key (and model) without reserving anything.
	CheckOnly bool
}

// Grant is an admitted request: who pays, and the hold to settle.
type Grant struct {
	KeyID     string
	User      string
	RequestID string
	Hold      Nanos
}

// authorizeScript checks the key, its expiry and model allowlist, releases
// the account's expired holds, and reserves the new hold if the available
// balance (balance − held) covers it. Lua numbers are doubles: balances are
// compared exactly up to 2^53 nanos (about 9 million currency units); every
// stored value is changed with HINCRBY on integer strings.
var authorizeScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'id', 'user', 'status', 'models', 'expires')
if not rec[1] or rec[3] ~= 'active' then return {'invalid'} end
local now = tonumber(ARGV[2])
local exp = tonumber(rec[5] or '0') or 0
if exp > 0 and exp <= now then return {'invalid'} end
if ARGV[1] ~= '' and rec[4] and rec[4] ~= '' then
  if string.find(ARGV[1], ',', 1, true) or not string.find(rec[4], ',' .. ARGV[1] .. ',', 1, true) then
    return {'model', rec[1], rec[2]}
  end
end
if ARGV[3] == 'check' then return {'ok', rec[1], rec[2]} end
local user = rec[2]
local acct = 'ait:{' .. user .. '}:acct'
local holds = 'ait:{' .. user .. '}:holds'
local amts = 'ait:{' .. user .. '}:holdamt'
local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', now, 'LIMIT', 0, 64)
for _, id in ipairs(expired) do
  local amt = redis.call('HGET', amts, id)
  if amt and amt ~= '0' then redis.call('HINCRBY', acct, 'held', '-' .. amt) end
  redis.call('HDEL', amts, id)
  redis.call('ZREM', holds, id)
end
local v = redis.call('HMGET', acct, 'balance', 'held')
local bal = tonumber(v[1] or '0') or 0
local held = tonumber(v[2] or '0') or 0
if redis.call('HEXISTS', amts, ARGV[4]) == 1 then return {'dup', rec[1], user} end
if bal - held < tonumber(ARGV[3]) then return {'quota', rec[1], user} end
redis.call('HINCRBY', acct, 'held', ARGV[3])
redis.call('ZADD', holds, ARGV[5], ARGV[4])
redis.call('HSET', amts, ARGV[4], ARGV[3])
return {'ok', rec[1], user}
`)

// Authorize admits a request in one round trip: the key must exist, be
// active and unexpired, allow the model, and (unless CheckOnly) the
// account's available balance must cover the hold, which is then reserved.
func (a *Accounts) Authorize(ctx context.Context, req AuthRequest) (Grant, error) {
	now := time.Now()
	hold := "check"
	if !req.CheckOnly {
		if req.RequestID == "" {
			return Grant{}, errors.New("a hold needs a request id")
		}
		if req.Hold < 0 {
			return Grant{}, fmt.Errorf("negative hold %d", req.Hold)
		}
		hold = strconv.FormatInt(int64(req.Hold), 10)
	}
	deadline := now.Add(a.HoldTTL).UnixMilli()
	res, err := authorizeScript.Run(ctx, a.rdb, []string{keyRecordKey(req.KeyHash)},
		req.Model, now.UnixMilli(), hold, req.RequestID, deadline).StringSlice()
	if err != nil {
		return Grant{}, err
	}
	g := Grant{RequestID: req.RequestID}
	if len(res) >= 3 {
		g.KeyID, g.User = res[1], res[2]
	}
	switch res[0] {
	case "ok":
		if !req.CheckOnly {
			g.Hold = req.Hold
		}
		return g, nil
	case "model":
		return g, ErrModelNotAllowed
	case "quota":
		return g, ErrInsufficientQuota
	case "dup":
		return Grant{}, fmt.Errorf("request id %q already holds a reservation", req.RequestID)
	default:
		return Grant{}, ErrInvalidKey
	}
}

// settleScript releases exactly the request's own hold (if still there),
// debits the real cost and appends the usage record to the stream, all at
// once.
var settleScript = redis.NewScript(`
local amt = redis.call('HGET', KEYS[3], ARGV[1])
if amt then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  if amt ~= '0' then redis.call('HINCRBY', KEYS[1], 'held', '-' .. amt) end
end
local bal = redis.call('HINCRBY', KEYS[1], 'balance', ARGV[2])
redis.call('XADD', KEYS[4], '*', 'r', ARGV[3])
return bal
`)

// Settle releases g's hold, debits cost and records usage (the JSON of a
// usage record) in one round trip, returning the new balance.
func (a *Accounts) Settle(ctx context.Context, g Grant, cost Nanos, record []byte) (Nanos, error) {
	if cost < 0 {
		return 0, fmt.Errorf("negative cost %d", cost)
	}
	bal, err := settleScript.Run(ctx, a.rdb,
		[]string{acctKey(g.User), holdsKey(g.User), holdAmtKey(g.User), UsageStream},
		g.RequestID, strconv.FormatInt(-int64(cost), 10), record).Int64()
	return Nanos(bal), err
}

// seededKey marks a Redis whose accounts and keys were built from the
// ledger. A Redis that lost its data (restarted without persistence) lacks
// it, and the ledger node seeds it again at start.
const seededKey = "ait:seeded"

// Seeded reports whether Redis holds state built from the ledger.
func (a *Accounts) Seeded(ctx context.Context) (bool, error) {
	n, err := a.rdb.Exists(ctx, seededKey).Result()
	return n == 1, err
}

// Seed writes every account balance (with no holds) and key record, keyed
// by key hash, from the ledger, and marks Redis as seeded.
func (a *Accounts) Seed(ctx context.Context, balances map[string]Nanos, keys map[string]KeyRecord) error {
	pipe := a.rdb.Pipeline()
	flush := func() error {
		if pipe.Len() < 512 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	for user, bal := range balances {
		pipe.HSet(ctx, acctKey(user), "balance", int64(bal), "held", 0)
		pipe.Del(ctx, holdsKey(user), holdAmtKey(user))
		if err := flush(); err != nil {
			return err
		}
	}
	for hash, k := range keys {
		if err := a.putKey(ctx, pipe, hash, k); err != nil {
			return err
		}
		if err := flush(); err != nil {
			return err
		}
	}
	pipe.Set(ctx, seededKey, time.Now().UTC().Format(time.RFC3339), 0)
	_, err := pipe.Exec(ctx)
	return err
}
