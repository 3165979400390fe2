package billing

import "github.com/redis/go-redis/v9"

// authorizeScript checks the key, its expiry, its allowed_ips, its model
// allowlist and its rpm/tpm windows, releases the account's expired holds
// (remembering them for late settlements) and expired balance leases, and
// reserves the new hold if the
// available balance (balance − held) covers it.
//
// allowed_ips is checked first after the key itself, before anything is
// counted or reserved: a request from a refused address leaves no trace
// (no hold, no rpm count) and learns nothing of the account's balance or
// limits. CIDR matching is a string-prefix test: Go writes the client
// address as "b" + its 128 bits (IPv4 as IPv4-mapped) and each allowed
// range, at key creation, as the first 1+prefix-length characters of that
// form (field ipbits, ",b0101…,b1100…,"); the human form is in field ips.
//
// Lua numbers are doubles: balances are compared exactly up to 2^53 nanos
// (about 9 million currency units); every stored value is changed with
// HINCRBY on integer strings.
//
// ARGV: model, now (ms), hold (nanos, or "check"), request id, deadline (ms),
// client address bits ("" when unknown), hold up to (nanos, or ""): when
// larger than hold, the hold is as much of the available balance as there
// is, up to it; tokens the request may use ("" for none): counted against
// the key's tpm window at once, so a burst cannot pass the limit (a request
// is refused when the window holds tokens and these would pass the limit).
// Returns {status, key id, user, ...}: "ok" adds models, expires, rpm, tpm,
// requests used, tokens used, window reset (ms), allowed ips, and the hold
// reserved (nanos, when one was); "rate" adds
// kind, limit, used, reset (ms). Refusals: "invalid", "ip", "model",
// "quota", "rate".
var authorizeScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'id', 'user', 'status', 'models', 'expires', 'rpm', 'tpm', 'ipbits', 'ips')
if not rec[1] or rec[3] ~= 'active' then return {'invalid'} end
local now = tonumber(ARGV[2])
local exp = tonumber(rec[5] or '0') or 0
if exp > 0 and exp <= now then return {'invalid'} end
local ipbits = rec[8] or ''
if ipbits ~= '' then
  local ip, allowed = ARGV[6], false
  if ip ~= '' then
    for p in string.gmatch(ipbits, '[^,]+') do
      if string.sub(ip, 1, #p) == p then allowed = true break end
    end
  end
  if not allowed then return {'ip', rec[1], rec[2]} end
end
local models = rec[4] or ''
if ARGV[1] ~= '' and models ~= '' then
  if string.find(ARGV[1], ',', 1, true) or not string.find(models, ',' .. ARGV[1] .. ',', 1, true) then
    return {'model', rec[1], rec[2]}
  end
end
local user = rec[2]
local rpm = tonumber(rec[6] or '0') or 0
local tpm = tonumber(rec[7] or '0') or 0
local win = math.floor(now / 60000)
local reset = (win + 1) * 60000 - now
local prefix = 'ait:{' .. user .. '}:rl:' .. rec[1] .. ':' .. win
local rused, tused = 0, 0
local want = tonumber(ARGV[8] or '') or 0
if ARGV[3] ~= 'check' then
  if rpm > 0 then
    rused = tonumber(redis.call('GET', prefix .. ':r') or '0') or 0
    if rused >= rpm then return {'rate', rec[1], user, 'requests', tostring(rpm), tostring(rused), tostring(reset)} end
  end
  if tpm > 0 then
    tused = tonumber(redis.call('GET', prefix .. ':t') or '0') or 0
    if tused >= tpm or (tused > 0 and tused + want > tpm) then
      return {'rate', rec[1], user, 'tokens', tostring(tpm), tostring(tused), tostring(reset)}
    end
  end
end
local ok = {'ok', rec[1], user, models, tostring(exp), tostring(rpm), tostring(tpm), tostring(rused), tostring(tused), tostring(reset), rec[9] or ''}
if ARGV[3] == 'check' then return ok end
local acct = 'ait:{' .. user .. '}:acct'
local holds = 'ait:{' .. user .. '}:holds'
local amts = 'ait:{' .. user .. '}:holdamt'
local leases, ldl = 'ait:{' .. user .. '}:leases', 'ait:{' .. user .. '}:ldl'
local st = redis.call('TIME')
local snow = tonumber(st[1]) * 1000 + math.floor(tonumber(st[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', ldl, '-inf', snow, 'LIMIT', 0, 64)) do
  local amt = redis.call('HGET', leases, id)
  if amt and tonumber(amt) > 0 then redis.call('HINCRBY', acct, 'held', '-' .. amt) end
  redis.call('HDEL', leases, id)
  redis.call('ZREM', ldl, id)
end
local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', now, 'LIMIT', 0, 64)
if #expired > 0 then
  local trace = 'ait:{' .. user .. '}:expired'
  for _, id in ipairs(expired) do
    local amt = redis.call('HGET', amts, id)
    if amt and amt ~= '0' then redis.call('HINCRBY', acct, 'held', '-' .. amt) end
    redis.call('HDEL', amts, id)
    redis.call('ZREM', holds, id)
    redis.call('HSET', trace, id, amt or '0')
  end
  redis.call('PEXPIRE', trace, 604800000)
end
if redis.call('HEXISTS', amts, ARGV[4]) == 1 then return {'dup', rec[1], user} end
local v = redis.call('HMGET', acct, 'balance', 'held')
local bal = tonumber(v[1] or '0') or 0
local held = tonumber(v[2] or '0') or 0
local least = tonumber(ARGV[3])
local avail = bal - held
if avail < least then return {'quota', rec[1], user} end
local h = ARGV[3]
local upto = tonumber(ARGV[7] or '') or 0
if upto > least then
  -- exact: every amount is below 2^53 nanos
  h = string.format('%.0f', math.min(upto, avail))
end
redis.call('HINCRBY', acct, 'held', h)
redis.call('ZADD', holds, ARGV[5], ARGV[4])
redis.call('HSET', amts, ARGV[4], h)
ok[12] = h
if rpm > 0 then
  redis.call('INCR', prefix .. ':r')
  redis.call('PEXPIRE', prefix .. ':r', 120000)
  ok[8] = tostring(rused + 1)
end
if tpm > 0 and want > 0 then
  redis.call('INCRBY', prefix .. ':t', ARGV[8])
  redis.call('PEXPIRE', prefix .. ':t', 120000)
  ok[9] = tostring(tused + want)
end
return ok
`)

// settleScript releases exactly the request's own hold (if still there),
// debits the real cost, counts its tokens in the key's tpm window and
// appends the usage record to the stream, all at once.
//
// KEYS: acct, holds, holdamt, usage stream, expired-hold trace, tpm window
// ("" for none), replay marker. ARGV: request id, −cost, record, mode,
// tokens, the stream's record field (UsageField). Returns 1 when applied,
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
if KEYS[6] ~= '' then
  redis.call('INCRBY', KEYS[6], ARGV[5])
  redis.call('PEXPIRE', KEYS[6], 120000)
end
redis.call('XADD', KEYS[4], '*', ARGV[6], ARGV[3])
return 1
`)
