package billing

import (
	"context"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// appliedKey names the hash of ledger entries already applied to the
// account's balance: ledger entry id → amount.
func appliedKey(user string) string { return "ait:{" + user + "}:applied" }

// applyCreditScript adds a ledger entry's amount to the balance unless the
// entry was applied before; the marker and the balance change are one
// atomic step, so a crash can leave neither half alone.
//
// KEYS: acct, applied. ARGV: ledger entry id, amount (nanos, signed).
// Returns 1 when applied, 0 when it had been already.
var applyCreditScript = redis.NewScript(`
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'balance', ARGV[2])
redis.call('HSETNX', KEYS[1], 'held', 0)
return 1
`)

// ApplyCredit adds amount (negative debits) to the balance of user for the
// ledger entry entryID, exactly once: applying the same entry again, after a
// retry, a crash or a concurrent repair pass, changes nothing. The marker
// lives as long as the account, so ledger entry IDs must never be reused.
func (a *Accounts) ApplyCredit(ctx context.Context, user string, entryID int64, amount Nanos) error {
	return applyCreditScript.Run(ctx, a.rdb, []string{acctKey(user), appliedKey(user)},
		strconv.FormatInt(entryID, 10), strconv.FormatInt(int64(amount), 10)).Err()
}

// CreditApplied reports whether the ledger entry entryID has been applied to
// the balance of user in Redis.
func (a *Accounts) CreditApplied(ctx context.Context, user string, entryID int64) (bool, error) {
	return a.rdb.HExists(ctx, appliedKey(user), strconv.FormatInt(entryID, 10)).Result()
}
