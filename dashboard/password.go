package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters: OWASP's 19 MiB, 2 passes, 1 lane. They are written
// into every hash, so raising them later leaves old hashes readable.
const (
	argonMemory  = 19 * 1024 // KiB
	argonTime    = 2
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// Password length bounds, in bytes.
const (
	minPassword = 10
	maxPassword = 256
)

var b64 = base64.RawStdEncoding

// hashPassword returns the PHC string of password:
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>.
func hashPassword(password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	sum := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime,
		argonThreads, b64.EncodeToString(salt), b64.EncodeToString(sum)), nil
}

var errBadHash = errors.New("not an argon2id PHC string")

// checkPassword reports whether password matches the PHC string phc. An
// empty or unreadable phc never matches, but costs the same work, so that
// an unknown account answers as slowly as a known one.
func checkPassword(phc, password string) bool {
	var (
		m       uint32
		t       uint32
		p       uint8
		salt    []byte
		want    []byte
		v       int
		readErr error
	)
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		readErr = errBadHash
	} else {
		_, err1 := fmt.Sscanf(parts[2], "v=%d", &v)
		_, err2 := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p)
		var err3, err4 error
		salt, err3 = b64.DecodeString(parts[4])
		want, err4 = b64.DecodeString(parts[5])
		readErr = errors.Join(err1, err2, err3, err4)
		if readErr == nil && (v != argon2.Version || m == 0 || m > 1<<20 || t == 0 || t > 16 || p == 0 || len(want) < 16) {
			readErr = errBadHash
		}
	}
	if readErr != nil {
		salt, want = make([]byte, argonSaltLen), make([]byte, argonKeyLen)
		m, t, p = argonMemory, argonTime, argonThreads
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1 && readErr == nil
}
