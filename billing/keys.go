package billing

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"math/big"
	"strconv"
	"time"
)

// Redis key layout. Every key of one account carries the account's hash tag
// ({user}) so one script's keys stay in one slot:
//
//	ait:key:<sha256 hex>     HASH  id, user, status, models (",a,b," or ""), expires (unix ms, 0 = never)
//	ait:{<user>}:acct        HASH  balance, held (nanos)
//	ait:{<user>}:holds       ZSET  request id → hold deadline (unix ms)
//	ait:{<user>}:holdamt     HASH  request id → held nanos
//	ait:usage                STREAM usage records (field "r": JSON), read by the ledger flusher
//	ait:revocations          PUB/SUB key hashes revoked
const (
	keyPrefix         = "ait:key:"
	UsageStream       = "ait:usage"
	RevocationChannel = "ait:revocations"
)

func acctKey(user string) string    { return "ait:{" + user + "}:acct" }
func holdsKey(user string) string   { return "ait:{" + user + "}:holds" }
func holdAmtKey(user string) string { return "ait:{" + user + "}:holdamt" }
func keyRecordKey(hash string) string {
	return keyPrefix + hash
}

// HashKey returns the hex SHA-256 of an API key secret, the only form in
// which a key is stored.
func HashKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

const keyAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewKeySecret returns a fresh API key: "sk-ait-" and 40 base62 characters
// (about 238 bits from crypto/rand).
func NewKeySecret() string {
	b := make([]byte, 0, 47)
	b = append(b, "sk-ait-"...)
	max := big.NewInt(int64(len(keyAlphabet)))
	for range 40 {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err) // crypto/rand never fails on supported platforms
		}
		b = append(b, keyAlphabet[n.Int64()])
	}
	return string(b)
}

// NewID returns a random identifier with the given prefix and 16 hex digits.
func NewID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func expiredKey(user string) string { return "ait:{" + user + "}:expired" }

func replayKey(user, requestID string) string { return "ait:{" + user + "}:replayed:" + requestID }

// rateKey names the per-minute window of a key's requests ("r") or tokens
// ("t") at time t.
func rateKey(user, keyID string, t time.Time, kind string) string {
	return "ait:{" + user + "}:rl:" + keyID + ":" + strconv.FormatInt(t.UnixMilli()/60000, 10) + ":" + kind
}
