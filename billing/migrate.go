package billing

import (
	"context"
	"encoding/json"
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
// stream to their shards' streams, and records the layout's version. A
// Redis already at this version costs one GET. It is idempotent and safe
// to run on several nodes at once (a record moved twice is stored once:
// the ledger ignores a request ID it has). Every node runs it before it
// touches an account; nodes of the earlier version must be stopped first,
// since they would go on writing the old keys.
func (a *Accounts) MigrateLayout(ctx context.Context) (Migration, error) {
	var m Migration
	v, err := a.rdb.Get(ctx, layoutKey).Result()
	if err == nil && v == layoutVersion {
		return m, nil
	}
	if err != nil && err != redis.Nil {
		return m, fmt.Errorf("read key layout version: %w", err)
	}
	if err := a.renameAccountKeys(ctx, &m); err != nil {
		return m, err
	}
	if err := a.moveLegacyUsage(ctx, &m); err != nil {
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
// no entry, at once.
var dropIfEmpty = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
end
return redis.call('EXISTS', KEYS[1])
`)

// moveLegacyUsage moves the entries of the old single usage stream, oldest
// first, to their users' shard streams, deleting each once its copy is
// written, then drops the emptied stream. An entry whose user cannot be
// read goes to the first shard, where the ledger keeps it as a reject.
func (a *Accounts) moveLegacyUsage(ctx context.Context, m *Migration) error {
	for {
		if err := a.moveLegacyEntries(ctx, m); err != nil {
			return err
		}
		left, err := dropIfEmpty.Run(ctx, a.rdb, []string{legacyUsageStream}).Int()
		if err != nil {
			return fmt.Errorf("migrate usage stream: %w", err)
		}
		if left == 0 {
			return nil
		}
		// An entry came in since the last read: move it too.
	}
}

// moveLegacyEntries moves what the old stream holds, in batches.
func (a *Accounts) moveLegacyEntries(ctx context.Context, m *Migration) error {
	for {
		msgs, err := a.rdb.XRangeN(ctx, legacyUsageStream, "-", "+", migrateBatch).Result()
		if err != nil {
			return fmt.Errorf("migrate usage stream: %w", err)
		}
		if len(msgs) == 0 {
			break
		}
		_, err = a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			ids := make([]string, len(msgs))
			for i, msg := range msgs {
				ids[i] = msg.ID
				values := make([]any, 0, 2*len(msg.Values))
				for k, v := range msg.Values {
					values = append(values, k, v)
				}
				p.XAdd(ctx, &redis.XAddArgs{Stream: legacyRecordStream(msg), Values: values})
			}
			p.XDel(ctx, legacyUsageStream, ids...)
			return nil
		})
		if err != nil {
			return fmt.Errorf("migrate usage stream: %w", err)
		}
		m.Records += len(msgs)
	}
	return nil
}

// legacyRecordStream is the shard stream for an entry of the old stream.
func legacyRecordStream(msg redis.XMessage) string {
	raw, _ := msg.Values[UsageField].(string)
	var r struct {
		User string `json:"user"`
	}
	if json.Unmarshal([]byte(raw), &r) != nil || r.User == "" {
		return UsageStreams[0]
	}
	return UsageStreamOf(r.User)
}
