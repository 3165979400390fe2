package billing

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// SettleMode says how a settlement treats a request whose hold is gone.
type SettleMode string

// Settlement modes.
const (
	// SettleLive always debits, whether or not the hold is still there
	// (Redis may have lost it): for a first attempt sent at most once.
	SettleLive SettleMode = "live"
	// SettleReplay applies only if the request's hold (or the trace of its
	// expiry) is still there, so a settlement retried or replayed after
	// an attempt that did reach Redis never debits twice.
	SettleReplay SettleMode = "replay"
	// SettleReplayNoHold settles a request admitted without a hold (Redis
	// was down): applied once per request id, remembered for a week.
	SettleReplayNoHold SettleMode = "replay-nohold"
)

// Settle releases g's hold, debits cost, counts tokens in the key's tpm
// window and records usage (the JSON of a usage record), all in one round
// trip. It reports whether it applied (a replay of a settlement that
// already happened does not).
func (a *Accounts) Settle(ctx context.Context, g Grant, cost money.Nanos, tokens int64, record []byte, mode SettleMode) (bool, error) {
	if cost < 0 {
		return false, fmt.Errorf("negative cost %d", cost)
	}
	keys, args := settleParams(g, cost, tokens, record, mode)
	res, err := settleScript.Run(ctx, a.rdb, keys, args...).Int64()
	return res == 1, err
}

// SettleCmd queues Settle's script on pipe (by its SHA: a Redis that has
// not loaded it answers NOSCRIPT, and Settle should then run instead). The
// command's Int64 is 1 when it applied.
func (a *Accounts) SettleCmd(ctx context.Context, pipe redis.Pipeliner, g Grant, cost money.Nanos, tokens int64, record []byte, mode SettleMode) *redis.Cmd {
	if cost < 0 {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(fmt.Errorf("negative cost %d", cost))
		return cmd
	}
	keys, args := settleParams(g, cost, tokens, record, mode)
	return settleScript.EvalSha(ctx, pipe, keys, args...)
}

func settleParams(g Grant, cost money.Nanos, tokens int64, record []byte, mode SettleMode) ([]string, []any) {
	if mode == "" {
		mode = SettleLive
	}
	acct := acctKey(g.User)
	// With no tpm window to count in, the account key stands in for it (a
	// key of the same slot) and no tokens are counted.
	window := acct
	if g.Key.TPM > 0 && tokens > 0 {
		window = rateKey(g.User, g.KeyID, time.Now(), "t")
	} else {
		tokens = 0
	}
	return []string{acct, holdsKey(g.User), holdAmtKey(g.User), UsageStreamOf(g.User), expiredKey(g.User), window,
			replayKey(g.User, g.RequestID)},
		[]any{g.RequestID, strconv.FormatInt(-int64(cost), 10), record, string(mode), tokens, UsageField}
}
