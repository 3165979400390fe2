package billing

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math/big"
	mrand "math/rand/v2"
	"time"
)

// NewRequestID returns a new request ID: "req_" and 28 hex digits, the
// first 12 the milliseconds since the Unix epoch and the other 16 random.
// IDs sort by time, so the ledger's primary-key index grows at its end
// instead of at random pages (twice the insert rate on a large ledger),
// and 64 random bits per millisecond keep them unique across nodes (a
// collision would make the ledger drop a row as a duplicate).
//
// The random bits come from math/rand/v2's generator (ChaCha8, seeded from
// the operating system), which keeps them unique as well as crypto/rand
// would without a system call per request; an ID is no secret.
func NewRequestID() string { return requestID(time.Now()) }

func requestID(now time.Time) string {
	var raw [14]byte
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(now.UnixMilli()))
	copy(raw[:6], ms[2:])
	binary.BigEndian.PutUint64(raw[6:], mrand.Uint64())
	var out [4 + 28]byte
	copy(out[:], "req_")
	hex.Encode(out[4:], raw[:])
	return string(out[:])
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
func NewKeySecret() string { return randomSecret("sk-ait-", 40) }

// randomSecret is prefix and n base62 characters from crypto/rand.
func randomSecret(prefix string, n int) string {
	b := make([]byte, 0, len(prefix)+n)
	b = append(b, prefix...)
	max := big.NewInt(int64(len(keyAlphabet)))
	for range n {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err) // crypto/rand never fails on supported platforms
		}
		b = append(b, keyAlphabet[n.Int64()])
	}
	return string(b)
}

// CodePrefix starts every prepaid code, so a customer (and a secret
// scanner) can tell one from an API key.
const CodePrefix = "aitc-"

// NewCodeSecret returns a fresh prepaid code: CodePrefix and 32 base62
// characters (about 190 bits from crypto/rand), so guessing one is
// hopeless even without the rate limit on failed redeems. Like a key, it
// is stored only as HashKey of it.
func NewCodeSecret() string { return randomSecret(CodePrefix, 32) }

// NewID returns a random identifier with the given prefix and 16 hex digits.
func NewID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
