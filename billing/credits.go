package billing

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// appliedKey names the hash of ledger entries already applied to the
// account's balance: ledger entry id → amount.
func appliedKey(user string) string { return AccountKey(user, "applied") }

// creditRangeLua refuses (returns -1 from the script) a credit that would
// take the balance out of [−MaxNanos, MaxNanos]: ARGV[2] is the amount,
// ARGV[3] MaxNanos. Lua numbers are doubles: a balance and an amount each
// within 2⁵³ add up exactly, or, past 2⁵³, round to a value that is still
// past it, so the comparison is right. A balance already out of range may
// move towards the range.
const creditRangeLua = `
local amt, lim = tonumber(ARGV[2]), tonumber(ARGV[3])
local bal = tonumber(redis.call('HGET', KEYS[1], 'balance') or '0') or 0
if (amt > 0 and bal + amt > lim) or (amt < 0 and bal + amt < -lim) then return -1 end
`

// applyCreditScript adds a ledger entry's amount to the balance unless the
// entry was applied before; the marker and the balance change are one
// atomic step, so a crash can leave neither half alone. A credit that would
// take the balance out of range changes nothing.
//
// A debit tells every node to give back its lease on the account (the
// recall notice), so none goes on admitting on money that is gone.
//
// KEYS: acct, applied. ARGV: ledger entry id, amount (nanos, signed),
// MaxNanos, the recall channel, the user. Returns 1 when applied, 0 when it had been already, -1 when
// refused as out of range.
var applyCreditScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
` + creditRangeLua + `
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'balance', ARGV[2])
redis.call('HSETNX', KEYS[1], 'held', 0)
if amt < 0 then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
`)

// ApplyCredit adds amount (negative debits) to the balance of user for the
// ledger entry entryID, exactly once: applying the same entry again, after a
// retry, a crash or a concurrent repair pass, changes nothing. The marker
// lives as long as the account, so ledger entry IDs must never be reused.
// An amount, or a resulting balance, outside ±MaxNanos is refused with
// ErrAmountRange, and then neither the balance nor the marker is written.
func (a *Accounts) ApplyCredit(ctx context.Context, user string, entryID int64, amount money.Nanos) error {
	if err := money.CheckAmount(amount); err != nil {
		return fmt.Errorf("ledger entry %d: %w", entryID, err)
	}
	n, err := applyCreditScript.Run(ctx, a.rdb, []string{acctKey(user), appliedKey(user)},
		strconv.FormatInt(entryID, 10), strconv.FormatInt(int64(amount), 10), int64(money.MaxNanos), RecallChannel, user).Int64()
	if err == nil && n < 0 {
		err = fmt.Errorf("ledger entry %d: %w", entryID, money.ErrAmountRange)
	}
	return err
}

// CreditApplied reports whether the ledger entry entryID has been applied to
// the balance of user in Redis.
func (a *Accounts) CreditApplied(ctx context.Context, user string, entryID int64) (bool, error) {
	return a.rdb.HExists(ctx, appliedKey(user), strconv.FormatInt(entryID, 10)).Result()
}

// creditScript adds an amount to a balance unless that takes the balance
// out of range (see creditRangeLua).
//
// A debit sends the recall notice, as applyCreditScript does.
//
// KEYS: acct. ARGV: unused, amount (nanos, signed), MaxNanos, the recall
// channel, the user.
// Returns the new balance as a string (a Lua number would round it), or
// -1 when refused.
var creditScript = redis.NewScript(`
` + creditRangeLua + `
redis.call('HINCRBY', KEYS[1], 'balance', ARGV[2])
redis.call('HSETNX', KEYS[1], 'held', 0)
if amt < 0 then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return redis.call('HGET', KEYS[1], 'balance')
`)

// Credit adds amount (negative debits) to the balance of user and returns
// the new balance. An amount, or a resulting balance, outside ±MaxNanos is
// refused with ErrAmountRange, and Redis is left as it was.
func (a *Accounts) Credit(ctx context.Context, user string, amount money.Nanos) (money.Nanos, error) {
	if err := money.CheckAmount(amount); err != nil {
		return 0, err
	}
	res, err := creditScript.Run(ctx, a.rdb, []string{acctKey(user)},
		"", strconv.FormatInt(int64(amount), 10), int64(money.MaxNanos), RecallChannel, user).Result()
	if err != nil {
		return 0, err
	}
	switch v := res.(type) {
	case int64: // -1
		return 0, money.ErrAmountRange
	case string:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return money.Nanos(n), nil
		}
	}
	return 0, fmt.Errorf("credit: unexpected reply %v", res)
}

// Balance returns the balance of user and what its requests in flight
// hold in Redis. Balance leases (see TakeLease) are held too, but are not
// part of held here: they are the nodes' reserve, not requests.
func (a *Accounts) Balance(ctx context.Context, user string) (balance, held money.Nanos, err error) {
	pipe := a.rdb.Pipeline()
	acct := pipe.HMGet(ctx, acctKey(user), "balance", "held")
	leases := pipe.HVals(ctx, leasesKey(user))
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, 0, err
	}
	v := acct.Val()
	var leased int64
	for _, s := range leases.Val() {
		leased += max(atoi(s), 0)
	}
	return money.Nanos(intField(v[0])), money.Nanos(max(intField(v[1])-leased, 0)), nil
}

func intField(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
