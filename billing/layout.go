package billing

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Redis key layout. The accounts are spread over UsageShards shards;
// every key of one account carries its shard's hash tag ({#n}, a tag no user
// ID can be), and so does the shard's usage stream, so that each script's
// keys, the usage records it writes included, stay in one hash slot (as
// Redis Cluster requires):
//
//	ait:key:<sha256 hex>           HASH  id, user, status, models (",a,b," or ""), expires (unix ms, 0 = never)
//	ait:{#n}:<user>:acct           HASH  balance, held (nanos)
//	ait:{#n}:<user>:holds          ZSET  request id → hold deadline (unix ms)
//	ait:{#n}:<user>:holdamt        HASH  request id → held nanos
//	ait:{#n}:<user>:leases         HASH  lease id → nanos the lease may still spend (counted in held)
//	ait:{#n}:<user>:ldl            ZSET  lease id → lease deadline (unix ms, Redis' clock)
//	ait:{#n}:<user>:lseq:<id>      HASH  settlements of lease id applied: "wm" (all up to it) and later numbers
//	ait:{#n}:usage                 STREAM usage records of the shard's accounts (field "r": JSON; "rs": several, one per line), read by the ledger flusher
//	ait:revocations                PUB/SUB key hashes revoked or changed
//	ait:recalls                    PUB/SUB users whose balance went down: nodes give their leases back
//	ait:layout                     STRING the layout's version ("2"; MigrateLayout moves older keys)
const (
	keyPrefix         = "ait:key:"
	UsageField        = "r"  // the field of a usage stream entry holding the record's JSON
	UsageBatchField   = "rs" // the field of an entry holding several records' JSON, one per line
	RevocationChannel = "ait:revocations"
	RecallChannel     = "ait:recalls"
)

// UsageShards is the number of account shards, each with its own usage
// stream. A Redis Cluster spreads them over at most this many primaries.
const UsageShards = 16

// shardTags are the shards' hash tags, chosen so that shard n's slot lies
// in the n-th sixteenth of Redis' 16384 slots: a cluster whose primaries
// own equal slot ranges gets equal shares of the shards.
var shardTags = func() (tags [UsageShards]string) {
	const width = clusterSlots / UsageShards
	for n := range tags {
		for i := 0; ; i++ {
			t := "#" + strconv.Itoa(i)
			if int(clusterSlot(t))/width == n {
				tags[n] = t
				break
			}
		}
	}
	return tags
}()

// UsageStreams lists every shard's usage stream, in shard order.
var UsageStreams = func() []string {
	s := make([]string, UsageShards)
	for n, t := range shardTags {
		s[n] = "ait:{" + t + "}:usage"
	}
	return s
}()

// shardOf returns the shard of user's account: the one whose slot range
// holds the slot of the user ID itself, so that users spread as evenly as
// Redis spreads keys.
func shardOf(user string) int { return int(clusterSlot(user)) / (clusterSlots / UsageShards) }

// UsageStreamOf names the usage stream that user's records go to.
func UsageStreamOf(user string) string { return UsageStreams[shardOf(user)] }

// AccountKey names the key of user's account that ends in suffix (for
// example "acct"); every such key carries the account's hash tag.
func AccountKey(user, suffix string) string {
	return "ait:{" + shardTags[shardOf(user)] + "}:" + user + ":" + suffix
}

func acctKey(user string) string            { return AccountKey(user, "acct") }
func holdsKey(user string) string           { return AccountKey(user, "holds") }
func holdAmtKey(user string) string         { return AccountKey(user, "holdamt") }
func leasesKey(user string) string          { return AccountKey(user, "leases") }
func leaseDeadlinesKey(user string) string  { return AccountKey(user, "ldl") }
func leaseSeqKey(user, lease string) string { return AccountKey(user, "lseq:"+lease) }
func keyRecordKey(hash string) string {
	return keyPrefix + hash
}

func expiredKey(user string) string { return AccountKey(user, "expired") }

// DashSessionKey names a dashboard session, by the hash of its token.
func DashSessionKey(hash string) string { return "ait:dash_session:" + hash }

// DashSessionsKey names the set of user's dashboard session hashes.
func DashSessionsKey(user string) string { return AccountKey(user, "dash_sessions") }

func replayKey(user, requestID string) string { return AccountKey(user, "replayed:"+requestID) }

// rateKey names the per-minute window of a key's requests ("r") or tokens
// ("t") at time t.
func rateKey(user, keyID string, t time.Time, kind string) string {
	return AccountKey(user, "rl:"+keyID+":"+strconv.FormatInt(t.UnixMilli()/60000, 10)+":"+kind)
}

// clusterSlots is the number of hash slots of Redis Cluster.
const clusterSlots = 16384

// clusterSlot returns the Redis Cluster hash slot of key: CRC16 (XMODEM)
// of its hash tag (the part between the first "{" and the next "}", when
// not empty) or else of the whole key, modulo 16384.
func clusterSlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^key[k]]
	}
	return crc % clusterSlots
}

// crc16Table holds CRC16/XMODEM (polynomial 0x1021) of each byte value.
var crc16Table = func() (t [256]uint16) {
	for b := range t {
		crc := uint16(b) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[b] = crc
	}
	return t
}()

// UsageBacklog counts the entries waiting in all the usage streams: a
// record each, or a batch of records settled together (UsageRecords counts
// those).
func UsageBacklog(ctx context.Context, rdb redis.Cmdable) (int64, error) {
	cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, s := range UsageStreams {
			p.XLen(ctx, s)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("usage backlog: %w", err)
	}
	var n int64
	for _, c := range cmds {
		n += c.(*redis.IntCmd).Val()
	}
	return n, nil
}

// UsageRecords counts the records in all the usage streams, batches
// opened. It reads every entry: for tests and tools, not a hot path.
func UsageRecords(ctx context.Context, rdb redis.Cmdable) (int64, error) {
	var n int64
	for _, s := range UsageStreams {
		msgs, err := rdb.XRange(ctx, s, "-", "+").Result()
		if err != nil {
			return 0, fmt.Errorf("usage records: %w", err)
		}
		for _, m := range msgs {
			if raw, ok := m.Values[UsageBatchField].(string); ok {
				n += int64(strings.Count(raw, "\n")) + 1
			} else {
				n++
			}
		}
	}
	return n, nil
}
