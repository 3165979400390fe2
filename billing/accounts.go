package billing

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// Errors Authorize returns for a refused request.
var (
	ErrInvalidKey        = errors.New("invalid, revoked or expired API key")
	ErrModelNotAllowed   = errors.New("model not allowed for this key")
	ErrInsufficientQuota = errors.New("balance cannot cover this request")
	ErrIPNotAllowed      = errors.New("client IP not allowed for this key")
)

// DefaultHoldTTL is how long a hold lives when its node never settles it
// (the node died mid-request). After it, the next request on the account
// releases it.
const DefaultHoldTTL = time.Hour

// Accounts is the live state of keys and balances in Redis. Every check and
// every money movement is one Lua script, so each is atomic and costs one
// round trip.
type Accounts struct {
	rdb redis.UniversalClient
	// HoldTTL bounds how long a hold can outlive its request.
	HoldTTL time.Duration
}

// NewAccounts returns Accounts on rdb.
func NewAccounts(rdb redis.UniversalClient) *Accounts {
	return &Accounts{rdb: rdb, HoldTTL: DefaultHoldTTL}
}

// Client returns the Redis client.
func (a *Accounts) Client() redis.UniversalClient { return a.rdb }

// KeyRecord is what Redis knows of an API key.
type KeyRecord struct {
	ID     string
	User   string
	Active bool
	// Models the key may use; empty means every priced model.
	Models []string
	// ExpiresAt is when the key stops working; zero means never.
	ExpiresAt time.Time
	// RPM and TPM limit requests and tokens per minute; 0 is unlimited.
	RPM, TPM int64
	// AllowedIPs are the CIDR ranges (as NormalizeAllowedIPs writes them)
	// the key may be used from; empty means any address.
	AllowedIPs []string
}

// PutKey stores (or replaces) the record of the key with the given hash.
func (a *Accounts) PutKey(ctx context.Context, hash string, k KeyRecord) error {
	return a.putKey(ctx, a.rdb, hash, k)
}

func (a *Accounts) putKey(ctx context.Context, c redis.Cmdable, hash string, k KeyRecord) error {
	return c.HSet(ctx, keyRecordKey(hash), keyFields(k)...).Err()
}

// keyFields is k as the field/value pairs of its Redis hash.
func keyFields(k KeyRecord) []any {
	status := "revoked"
	if k.Active {
		status = "active"
	}
	models := ""
	if len(k.Models) > 0 {
		models = "," + strings.Join(k.Models, ",") + ","
	}
	var exp int64
	if !k.ExpiresAt.IsZero() {
		exp = k.ExpiresAt.UnixMilli()
	}
	ips, bits := "", ""
	if len(k.AllowedIPs) > 0 {
		ips = "," + strings.Join(k.AllowedIPs, ",") + ","
		bits = "," + strings.Join(prefixBitsList(k.AllowedIPs), ",") + ","
	}
	// ipbits is no longer read here; it is kept for nodes of an older
	// build sharing this Redis, which check allowed_ips from it.
	return []any{"id", k.ID, "user", k.User, "status", status, "models", models, "expires", exp,
		"rpm", max(k.RPM, 0), "tpm", max(k.TPM, 0), "ips", ips, "ipbits", bits}
}

// RevokeKey marks the key revoked and tells every node at once.
func (a *Accounts) RevokeKey(ctx context.Context, hash string) error {
	pipe := a.rdb.TxPipeline()
	pipe.HSet(ctx, keyRecordKey(hash), "status", "revoked")
	pipe.Publish(ctx, RevocationChannel, hash)
	_, err := pipe.Exec(ctx)
	return err
}

// updateKeyScript rewrites an active key's record and tells every node to
// drop its cached copy; a revoked or unknown key is left alone.
// KEYS: the key record. ARGV: the notice channel, the key hash, then the
// record's field/value pairs.
var updateKeyScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
`)

// UpdateKey rewrites the record of the active key hash with k (models,
// limits, allowed IPs, expiry) and tells every node, as a revocation does.
// A key Redis has as revoked, or not at all, gives ErrInvalidKey.
func (a *Accounts) UpdateKey(ctx context.Context, hash string, k KeyRecord) error {
	k.Active = true
	args := append([]any{RevocationChannel, hash}, keyFields(k)...)
	n, err := updateKeyScript.Run(ctx, a.rdb, []string{keyRecordKey(hash)}, args...).Int()
	if err == nil && n == 0 {
		err = ErrInvalidKey
	}
	return err
}

// EnsureAccount creates the account of user with a zero balance if Redis
// has none.
func (a *Accounts) EnsureAccount(ctx context.Context, user string) error {
	pipe := a.rdb.Pipeline()
	pipe.HSetNX(ctx, acctKey(user), "balance", 0)
	pipe.HSetNX(ctx, acctKey(user), "held", 0)
	_, err := pipe.Exec(ctx)
	return err
}

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func splitModels(s string) []string {
	s = strings.Trim(s, ",")
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// seededKey marks a Redis whose accounts and keys were built from the
// ledger. A Redis that lost its data (restarted without persistence) lacks
// it, and the ledger node seeds it again at start.
const seededKey = "ait:seeded"

// Seeded reports whether Redis holds state built from the ledger.
func (a *Accounts) Seeded(ctx context.Context) (bool, error) {
	n, err := a.rdb.Exists(ctx, seededKey).Result()
	return n == 1, err
}

// Seed writes every account balance (with no holds) and key record, keyed
// by key hash, from the ledger, and marks Redis as seeded. A balance
// outside ±MaxNanos (stored before amounts were bounded) is written
// clamped to the range, which reconcile then reports.
func (a *Accounts) Seed(ctx context.Context, balances map[string]money.Nanos, keys map[string]KeyRecord) error {
	pipe := a.rdb.Pipeline()
	flush := func() error {
		if pipe.Len() < 512 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	for user, bal := range balances {
		pipe.HSet(ctx, acctKey(user), "balance", int64(money.ClampNanos(bal)), "held", 0)
		pipe.Del(ctx, holdsKey(user), holdAmtKey(user), leasesKey(user), leaseDeadlinesKey(user))
		if err := flush(); err != nil {
			return err
		}
	}
	for hash, k := range keys {
		if err := a.putKey(ctx, pipe, hash, k); err != nil {
			return err
		}
		if err := flush(); err != nil {
			return err
		}
	}
	pipe.Set(ctx, seededKey, time.Now().UTC().Format(time.RFC3339), 0)
	_, err := pipe.Exec(ctx)
	return err
}

// RenewHold moves the deadline of the live hold of request id on user's
// account to deadline, so a request still running is not taken for one
// whose node died. A hold already settled or expired is left alone.
func (a *Accounts) RenewHold(ctx context.Context, user, requestID string, deadline time.Time) error {
	return a.rdb.ZAddXX(ctx, holdsKey(user), redis.Z{Score: float64(deadline.UnixMilli()), Member: requestID}).Err()
}

// EndDashboardSessions deletes every dashboard session of user (each holds
// the client's address and browser), so none of them signs in any more.
func (a *Accounts) EndDashboardSessions(ctx context.Context, user string) error {
	hashes, err := a.rdb.SMembers(ctx, DashSessionsKey(user)).Result()
	if err != nil {
		return err
	}
	for _, h := range hashes {
		// One command each: a session's key has no hash tag of the
		// account's (it is found by its token alone).
		if err := a.rdb.Del(ctx, DashSessionKey(h)).Err(); err != nil {
			return err
		}
	}
	return a.rdb.Del(ctx, DashSessionsKey(user)).Err()
}
