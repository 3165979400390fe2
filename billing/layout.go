package billing

import (
	"strconv"
	"time"
)

// The Redis key layout. Every key of one account carries the account's hash tag
// ({user}) so one script's keys stay in one slot:
//
//	ait:key:<sha256 hex>     HASH  id, user, status, models (",a,b," or ""), expires (unix ms, 0 = never)
//	ait:{<user>}:acct        HASH  balance, held (nanos)
//	ait:{<user>}:holds       ZSET  request id → hold deadline (unix ms)
//	ait:{<user>}:holdamt     HASH  request id → held nanos
//	ait:{<user>}:leases      HASH  lease id → nanos the lease may still spend (counted in held)
//	ait:{<user>}:ldl         ZSET  lease id → lease deadline (unix ms, Redis' clock)
//	ait:{<user>}:lseq:<id>   HASH  settlements of lease id applied: "wm" (all up to it) and later numbers
//	ait:usage                STREAM usage records (field "r": JSON), read by the ledger flusher
//	ait:revocations          PUB/SUB key hashes revoked or changed
//	ait:recalls              PUB/SUB users whose balance went down: nodes give their leases back
const (
	keyPrefix         = "ait:key:"
	UsageStream       = "ait:usage"
	UsageField        = "r" // the field of a usage stream entry holding the record's JSON
	RevocationChannel = "ait:revocations"
	RecallChannel     = "ait:recalls"
)

func acctKey(user string) string            { return "ait:{" + user + "}:acct" }
func holdsKey(user string) string           { return "ait:{" + user + "}:holds" }
func holdAmtKey(user string) string         { return "ait:{" + user + "}:holdamt" }
func leasesKey(user string) string          { return "ait:{" + user + "}:leases" }
func leaseDeadlinesKey(user string) string  { return "ait:{" + user + "}:ldl" }
func leaseSeqKey(user, lease string) string { return "ait:{" + user + "}:lseq:" + lease }
func keyRecordKey(hash string) string {
	return keyPrefix + hash
}

func expiredKey(user string) string { return "ait:{" + user + "}:expired" }

func replayKey(user, requestID string) string { return "ait:{" + user + "}:replayed:" + requestID }

// rateKey names the per-minute window of a key's requests ("r") or tokens
// ("t") at time t.
func rateKey(user, keyID string, t time.Time, kind string) string {
	return "ait:{" + user + "}:rl:" + keyID + ":" + strconv.FormatInt(t.UnixMilli()/60000, 10) + ":" + kind
}
