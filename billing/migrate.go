package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The layout's version, kept in layoutKey once MigrateLayout has run.
const (
	layoutKey     = "ait:layout"
	layoutVersion = "2"
	// legacyUsageStream is the one usage stream of the first layout, where
	// every account key was tagged with the user ID alone (ait:{<user>}:…).
	legacyUsageStream = "ait:usage"
)

// migrateBatch is how many keys or stream entries one migration round
// trip moves.
const migrateBatch = 500

// ErrNewerLayout is MigrateLayout's answer on a Redis that a newer version
// of the gateway has moved to a key layout this build does not know.
var ErrNewerLayout = errors.New("redis key layout newer than this build")

// Migration says what MigrateLayout moved.
type Migration struct {
	// Keys is the number of account keys renamed to their shard's tag.
	Keys int
	// Conflicts lists old keys left in place because their new name was
	// already taken (a node of the old version wrote after the move).
	Conflicts []string
	// Records is the number of usage records moved from the old single
	// stream to their shards' streams.
	Records int
}

// MigrateLayout brings a Redis written by an earlier version to the
// current key layout: it renames every account key (ait:{<user>}:…) to
// carry its shard's tag, moves the usage records still in the old single
// stream to their shards' streams, and records the layout's version. On a
// Redis already at this version it only moves records that reached the
// old stream since (MoveLegacyUsage): one round trip when there are none.
// It is idempotent and safe to run on several nodes at once. Every node
// runs it before it touches an account; nodes of the earlier version must
// be stopped first, since they would go on writing the old keys. A Redis
// in a layout newer than this build's is refused (ErrNewerLayout).
func (a *Accounts) MigrateLayout(ctx context.Context) (Migration, error) {
	var m Migration
	v, err := a.rdb.Get(ctx, layoutKey).Result()
	if err != nil && err != redis.Nil {
		return m, fmt.Errorf("read key layout version: %w", err)
	}
	if v == layoutVersion {
		m.Records, err = a.MoveLegacyUsage(ctx)
		return m, err
	}
	if v != "" {
		return m, fmt.Errorf("%w: Redis holds key layout %q, this build knows %s", ErrNewerLayout, v, layoutVersion)
	}
	if err := a.renameAccountKeys(ctx, &m); err != nil {
		return m, err
	}
	if m.Records, err = a.MoveLegacyUsage(ctx); err != nil {
		return m, err
	}
	if err := a.rdb.Set(ctx, layoutKey, layoutVersion, 0).Err(); err != nil {
		return m, fmt.Errorf("record key layout version: %w", err)
	}
	return m, nil
}

// legacyAccountKey splits a key of the first layout, ait:{<user>}:<suffix>,
// into the user and the suffix.
func legacyAccountKey(key string) (user, suffix string, ok bool) {
	rest, found := strings.CutPrefix(key, "ait:{")
	if !found {
		return "", "", false
	}
	user, suffix, found = strings.Cut(rest, "}:")
	// Shard tags start with "#", which no user ID may contain.
	if !found || user == "" || strings.ContainsAny(user, "#{}") || suffix == "" {
		return "", "", false
	}
	return user, suffix, true
}

// renameAccountKeys renames every key of the first layout (TTL and all) to
// its name in this one. A key renamed meanwhile by another node is skipped.
func (a *Accounts) renameAccountKeys(ctx context.Context, m *Migration) error {
	iter := a.rdb.Scan(ctx, 0, "ait:{*", migrateBatch).Iterator()
	var olds []string
	flush := func() error {
		if len(olds) == 0 {
			return nil
		}
		cmds, _ := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range olds {
				user, suffix, _ := legacyAccountKey(k)
				p.RenameNX(ctx, k, AccountKey(user, suffix))
			}
			return nil
		})
		for i, c := range cmds {
			done, err := c.(*redis.BoolCmd).Result()
			switch {
			case err != nil && strings.Contains(err.Error(), "no such key"):
				// moved by another node meanwhile
			case err != nil:
				return fmt.Errorf("migrate account keys: %w", err)
			case done:
				m.Keys++
			default:
				m.Conflicts = append(m.Conflicts, olds[i])
			}
		}
		olds = olds[:0]
		return nil
	}
	for iter.Next(ctx) {
		if _, _, ok := legacyAccountKey(iter.Val()); ok {
			olds = append(olds, iter.Val())
		}
		if len(olds) == migrateBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("migrate account keys: %w", err)
	}
	return flush()
}

// dropIfEmpty deletes a stream (and its consumer groups) only when it holds
// no entry, at once. It returns whether the stream is still there.
var dropIfEmpty = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
end
return redis.call('EXISTS', KEYS[1])
`)

// moveEntries moves entries of the stream KEYS[1], named by ID in ARGV, each
// to its stream in KEYS[i+1]: each entry still there is added to its
// stream, then deleted from the old one. An entry is moved by one caller
// only, and a refused XADD (OOM) ends the script before the entry's XDEL,
// so nothing is lost or copied twice. The keys span slots: the old layout
// ran only on one server. Returns the number moved.
var moveEntries = redis.NewScript(`
local moved = 0
for i, id in ipairs(ARGV) do
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if #e == 1 then
    redis.call('XADD', KEYS[i + 1], '*', unpack(e[1][2]))
    redis.call('XDEL', KEYS[1], id)
    moved = moved + 1
  end
end
return moved
`)

// MoveLegacyUsage moves the entries of the first layout's single usage
// stream, oldest first, to their users' shard streams, then drops the
// emptied stream; it reports how many it moved. An entry whose user cannot
// be read goes to the first shard, where the ledger keeps it as a reject.
// With no such stream it costs one round trip: the ledger node also runs
// it now and then, for records a node of the earlier version wrote after
// the move.
func (a *Accounts) MoveLegacyUsage(ctx context.Context) (int, error) {
	moved := 0
	for {
		left, err := dropIfEmpty.Run(ctx, a.rdb, []string{legacyUsageStream}).Int()
		if err != nil {
			return moved, fmt.Errorf("migrate usage stream: %w", err)
		}
		if left == 0 {
			return moved, nil
		}
		msgs, err := a.rdb.XRangeN(ctx, legacyUsageStream, "-", "+", migrateBatch).Result()
		if err != nil {
			return moved, fmt.Errorf("migrate usage stream: %w", err)
		}
		keys := make([]string, 1, 1+len(msgs))
		keys[0] = legacyUsageStream
		ids := make([]any, len(msgs))
		for i, msg := range msgs {
			keys = append(keys, legacyRecordStream(msg))
			ids[i] = msg.ID
		}
		n, err := moveEntries.Run(ctx, a.rdb, keys, ids...).Int()
		moved += n
		if err != nil {
			return moved, fmt.Errorf("migrate usage stream: %w", err)
		}
	}
}

// legacyRecordStream is the shard stream for an entry of the old stream.
func legacyRecordStream(msg redis.XMessage) string {
	raw, ok := msg.Values[UsageField].(string)
	if !ok { // a batch: its records are all of one shard
		raw, _ = msg.Values[UsageBatchField].(string)
		raw, _, _ = strings.Cut(raw, "\n")
	}
	var r struct {
		User string `json:"user"`
	}
	if json.Unmarshal([]byte(raw), &r) != nil || r.User == "" {
		return UsageStreams[0]
	}
	return UsageStreamOf(r.User)
}
