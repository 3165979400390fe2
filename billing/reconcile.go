package billing

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// Live is what Redis holds for one account.
type Live struct {
	Balance, Held money.Nanos
	// Missing is true when Redis has no account for the user.
	Missing bool
}

// Live reads the live state of users' accounts in one pipeline.
func (a *Accounts) Live(ctx context.Context, users []string) (map[string]Live, error) {
	pipe := a.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(users))
	for i, u := range users {
		cmds[i] = pipe.HMGet(ctx, acctKey(u), "balance", "held")
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, err
	}
	out := make(map[string]Live, len(users))
	for i, u := range users {
		v := cmds[i].Val()
		out[u] = Live{Balance: money.Nanos(intField(v[0])), Held: money.Nanos(intField(v[1])), Missing: len(v) == 0 || v[0] == nil}
	}
	return out, nil
}

// KeyStates returns, by key hash, whether Redis has each key's record
// active (true), revoked (false), or not at all (absent).
func (a *Accounts) KeyStates(ctx context.Context, hashes []string) (map[string]bool, error) {
	pipe := a.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(hashes))
	for i, h := range hashes {
		cmds[i] = pipe.HGet(ctx, keyRecordKey(h), "status")
	}
	_, _ = pipe.Exec(ctx)
	out := make(map[string]bool, len(hashes))
	for i, h := range hashes {
		st, err := cmds[i].Result()
		switch {
		case err == redis.Nil:
		case err != nil:
			return nil, err
		default:
			out[h] = st == "active"
		}
	}
	return out, nil
}

// SetBalance sets the balance of user, keeping its live holds, recalls the
// nodes' leases (sized on the old balance), and creates
// the account if Redis lost it. A balance outside ±MaxNanos is refused with
// ErrAmountRange.
func (a *Accounts) SetBalance(ctx context.Context, user string, balance money.Nanos) error {
	if err := money.CheckAmount(balance); err != nil {
		return err
	}
	pipe := a.rdb.TxPipeline()
	pipe.HSet(ctx, acctKey(user), "balance", int64(balance))
	pipe.HSetNX(ctx, acctKey(user), "held", 0)
	// The nodes' leases were sized on the old balance.
	pipe.Publish(ctx, RecallChannel, user)
	_, err := pipe.Exec(ctx)
	return err
}

// MarkSeeded records that Redis holds state built from the ledger.
func (a *Accounts) MarkSeeded(ctx context.Context) error {
	return a.rdb.Set(ctx, seededKey, time.Now().UTC().Format(time.RFC3339), 0).Err()
}

// KeyHashesInRedis lists the hashes of every key record Redis holds.
func (a *Accounts) KeyHashesInRedis(ctx context.Context) ([]string, error) {
	var out []string
	iter := a.rdb.Scan(ctx, 0, keyPrefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		out = append(out, strings.TrimPrefix(iter.Val(), keyPrefix))
	}
	return out, iter.Err()
}
