package billing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrRateLimited matches every *RateLimitError.
var ErrRateLimited = errors.New("rate limit exceeded")

// RateLimitError refuses a request over its key's per-minute limit.
type RateLimitError struct {
	// Kind is "requests" or "tokens".
	Kind string
	// Limit is the key's limit per minute.
	Limit int64
	// Reset is when the current window ends.
	Reset time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("rate limit exceeded: %d %s per minute", e.Limit, e.Kind)
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

// RateState is the state of a key's windows after an admitted request, for
// OpenAI's x-ratelimit-* headers. A zero limit means unlimited.
type RateState struct {
	RequestLimit, RequestsLeft int64
	TokenLimit, TokensLeft     int64
	// Reset is when the current one-minute window ends.
	Reset time.Duration
}

func rateState(rpm, tpm, rused, tused, resetMS int64) RateState {
	return RateState{
		RequestLimit: rpm, RequestsLeft: max(rpm-rused, 0),
		TokenLimit: tpm, TokensLeft: max(tpm-tused, 0),
		Reset: time.Duration(resetMS) * time.Millisecond,
	}
}

// takeRateScript reserves part of a key's rpm and tpm windows for one node
// (a rate share), so the node can count the key's requests and tokens in
// memory. For each limit: nothing is granted when the window is full, or
// when it holds tokens and the tokens needed would pass the limit (one
// request larger than the whole tpm limit passes an empty window, as the
// per-request check lets it); else up to the wanted amount, at least what
// is needed. Both grants, or neither.
//
// KEYS: the requests window, the tokens window. ARGV: rpm, tpm, requests
// wanted, requests needed, tokens wanted, tokens needed.
// Returns {"ok", requests granted, tokens granted, requests used, tokens
// used} (used after the grant), or {"rate", kind, used}.
var takeRateScript = redis.NewScript(`
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local rq, tk = 0, 0
local rused, tused = 0, 0
if rpm > 0 then
  rused = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
  local need = tonumber(ARGV[4])
  if rused + need > rpm then return {'rate', 'requests', tostring(rused)} end
  rq = math.max(math.min(tonumber(ARGV[3]), rpm - rused), need)
end
if tpm > 0 then
  tused = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  local need = tonumber(ARGV[6])
  if tused >= tpm or (tused > 0 and tused + need > tpm) then return {'rate', 'tokens', tostring(tused)} end
  tk = math.max(math.min(tonumber(ARGV[5]), tpm - tused), need)
end
if rq > 0 then
  rused = redis.call('INCRBY', KEYS[1], rq)
  redis.call('PEXPIRE', KEYS[1], 120000)
end
if tk > 0 then
  tused = redis.call('INCRBY', KEYS[2], tk)
  redis.call('PEXPIRE', KEYS[2], 120000)
end
return {'ok', tostring(rq), tostring(tk), tostring(rused), tostring(tused)}
`)

// RateTake asks TakeRate for a share of a key's windows.
type RateTake struct {
	// User and KeyID name the key's windows; RPM and TPM are its limits.
	User, KeyID string
	RPM, TPM    int64
	// Window is the start of the minute (as time) the share is for.
	Window time.Time
	// WantRequests/WantTokens are the most to take; NeedRequests/
	// NeedTokens the least (what the request at hand needs).
	WantRequests, NeedRequests int64
	WantTokens, NeedTokens     int64
}

// RateGrant is what TakeRate reserved and the windows' use after it.
type RateGrant struct {
	Requests, Tokens         int64
	RequestsUsed, TokensUsed int64
}

// TakeRate reserves a share of a key's rpm/tpm windows in one round trip,
// or answers a *RateLimitError when the window cannot give what is needed.
func (a *Accounts) TakeRate(ctx context.Context, t RateTake) (RateGrant, error) {
	reset := t.Window.Add(time.Minute).Sub(time.Now())
	res, err := takeRateScript.Run(ctx, a.rdb,
		[]string{rateKey(t.User, t.KeyID, t.Window, "r"), rateKey(t.User, t.KeyID, t.Window, "t")},
		t.RPM, t.TPM, t.WantRequests, t.NeedRequests, t.WantTokens, t.NeedTokens).StringSlice()
	if err != nil {
		return RateGrant{}, err
	}
	if res[0] == "rate" {
		limit := t.RPM
		if res[1] == "tokens" {
			limit = t.TPM
		}
		return RateGrant{}, &RateLimitError{Kind: res[1], Limit: limit, Reset: max(reset, 0)}
	}
	return RateGrant{Requests: atoi(res[1]), Tokens: atoi(res[2]), RequestsUsed: atoi(res[3]), TokensUsed: atoi(res[4])}, nil
}
