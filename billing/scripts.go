package billing

import "github.com/redis/go-redis/v9"

// holdScript admits one request of a key already checked (LookupKey and
// Authorize's checks): it releases the account's expired balance leases
// and expired holds (remembering those for late settlements), checks and
// counts the key's rpm/tpm windows, and reserves the hold if the available
// balance (balance − held) covers it. Every key it touches is declared, and
// all are in the account's hash slot.
//
// Lua numbers are doubles: balances are compared exactly up to 2^53 nanos
// (about 9 million currency units); every stored value is changed with
// HINCRBY on integer strings.
//
// KEYS: acct, holds, holdamt, expired-hold trace, leases, lease deadlines,
// requests window, tokens window. ARGV: now (ms), hold (nanos), request
// id, deadline (ms), hold up to (nanos, or ""): when larger than hold, the
// hold is as much of the available balance as there is, up to it; tokens
// the request may use ("" for none): counted against the tpm window at
// once, so a burst cannot pass the limit (a request is refused when the
// window holds tokens and these would pass the limit); rpm; tpm; window
// reset (ms).
// Returns {"ok", requests used, tokens used, hold reserved}, {"rate", kind,
// limit, used}, {"quota"}, {"noacct"} (Redis has no such account: it
// lost its data) or {"dup"}.
var holdScript = redis.NewScript(dropExpiredLeasesLua("KEYS[1]", "KEYS[5]", "KEYS[6]") + `
local now = tonumber(ARGV[1])
local rpm, tpm = tonumber(ARGV[7]), tonumber(ARGV[8])
local rused, tused = 0, 0
local want = tonumber(ARGV[6] or '') or 0
if rpm > 0 then
  rused = tonumber(redis.call('GET', KEYS[7]) or '0') or 0
  if rused >= rpm then return {'rate', 'requests', tostring(rpm), tostring(rused)} end
end
if tpm > 0 then
  tused = tonumber(redis.call('GET', KEYS[8]) or '0') or 0
  if tused >= tpm or (tused > 0 and tused + want > tpm) then
    return {'rate', 'tokens', tostring(tpm), tostring(tused)}
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 64)
if #expired > 0 then
  for _, id in ipairs(expired) do
    local amt = redis.call('HGET', KEYS[3], id)
    if amt and amt ~= '0' then redis.call('HINCRBY', KEYS[1], 'held', '-' .. amt) end
    redis.call('HDEL', KEYS[3], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('HSET', KEYS[4], id, amt or '0')
  end
  redis.call('PEXPIRE', KEYS[4], 604800000)
end
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then return {'dup'} end
local v = redis.call('HMGET', KEYS[1], 'balance', 'held')
if not v[1] then return {'noacct'} end
local bal = tonumber(v[1] or '0') or 0
local held = tonumber(v[2] or '0') or 0
local least = tonumber(ARGV[2])
local avail = bal - held
if avail < least then return {'quota'} end
local h = ARGV[2]
local upto = tonumber(ARGV[5] or '') or 0
if upto > least then
  -- exact: every amount is below 2^53 nanos
  h = string.format('%.0f', math.min(upto, avail))
end
redis.call('HINCRBY', KEYS[1], 'held', h)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], h)
if rpm > 0 then
  rused = redis.call('INCR', KEYS[7])
  redis.call('PEXPIRE', KEYS[7], 120000)
end
if tpm > 0 and want > 0 then
  tused = redis.call('INCRBY', KEYS[8], ARGV[6])
  redis.call('PEXPIRE', KEYS[8], 120000)
end
return {'ok', tostring(rused), tostring(tused), h}
`)

// settleScript releases exactly the request's own hold (if still there),
// debits the real cost, counts its tokens in the key's tpm window and
// appends the usage record to the stream, all at once.
//
// KEYS: acct, holds, holdamt, the shard's usage stream, expired-hold
// trace, tpm window (any key of the account when tokens is 0), replay
// marker. ARGV: request id, −cost, record, mode, tokens (0 counts none),
// the stream's record field (UsageField). Returns 1 when applied,
// 0 when a replay found it already done.
var settleScript = redis.NewScript(`
local amt = redis.call('HGET', KEYS[3], ARGV[1])
if amt then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  if amt ~= '0' then redis.call('HINCRBY', KEYS[1], 'held', '-' .. amt) end
elseif redis.call('HDEL', KEYS[5], ARGV[1]) == 1 then
  -- the hold expired before this settlement: it is released already
elseif ARGV[4] == 'replay' then
  return 0
elseif ARGV[4] == 'replay-nohold' then
  if not redis.call('SET', KEYS[7], '1', 'NX', 'PX', 604800000) then return 0 end
end
redis.call('HINCRBY', KEYS[1], 'balance', ARGV[2])
if ARGV[5] ~= '0' then
  redis.call('INCRBY', KEYS[6], ARGV[5])
  redis.call('PEXPIRE', KEYS[6], 120000)
end
redis.call('XADD', KEYS[4], '*', ARGV[6], ARGV[3])
return 1
`)
