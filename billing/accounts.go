package billing

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
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

// AuthRequest asks to admit one request.
type AuthRequest struct {
	// KeyHash is HashKey of the presented secret.
	KeyHash string
	// Model is checked against the key's allowlist; empty skips the check.
	Model string
	// Hold is reserved from the balance when CheckOnly is false.
	Hold money.Nanos
	// RequestID names the hold.
	RequestID string
	// HoldUpTo, when larger than Hold, is the most the request can cost:
	// the hold is then as much of the available balance as there is, up
	// to HoldUpTo, and at least Hold (else the request is refused). So
	// requests that may cost more than their Hold cannot, together,
	// overdraw the balance: once one holds all that is available, the
	// next is refused until it settles.
	HoldUpTo money.Nanos
	// Tokens is what the request may use (its input estimate and output
	// limit). On a key with a tpm limit they are counted in the key's
	// window at admission, as OpenAI counts max_tokens, so a burst of
	// requests cannot pass the limit; its settlement then adds only what
	// it used beyond them (Grant.TokensCounted). 0 counts at settlement
	// only.
	Tokens int64
	// CheckOnly validates the key (and model) without reserving anything.
	CheckOnly bool
	// ClientIP is checked against the key's allowed_ips. The zero Addr
	// (unknown) is refused by a key that has allowed_ips.
	ClientIP netip.Addr
	// Key, when set, is the key's record as fetched lately (the node's
	// cache): Authorize then does not read it again.
	Key *KeyRecord
}

// Grant is an admitted request: who pays, and the hold to settle.
type Grant struct {
	KeyID     string
	User      string
	RequestID string
	Hold      money.Nanos
	// Key is the key's record as Redis has it (for the local key cache).
	Key KeyRecord
	// Limits is the state of the key's rate windows after this request.
	Limits RateState
	// TokensCounted is what admission counted in the key's tpm window
	// (AuthRequest.Tokens, on a key with a tpm limit): its settlement
	// counts only the tokens used beyond it.
	TokensCounted int64
	// NoHold is set on a request admitted while Redis was unreachable
	// (on_redis_error allow): nothing was reserved for it.
	NoHold bool
	// Lease names the balance lease Hold was taken from, on this node
	// ("" when Hold is a hold in Redis).
	Lease string
}

// Authorize admits a request: the key must exist, be active and
// unexpired, allow the client IP and the model, be inside its rpm/tpm
// windows, and (unless CheckOnly) the account's available balance must
// cover the hold, which is then reserved and the request counted. It
// reads the key record (unless req.Key gives one fetched lately) and then
// runs one script on the account's keys alone: two round trips for a new
// key, one for a known one.
func (a *Accounts) Authorize(ctx context.Context, req AuthRequest) (Grant, error) {
	now := time.Now()
	if !req.CheckOnly {
		if req.RequestID == "" {
			return Grant{}, errors.New("a hold needs a request id")
		}
		if req.Hold < 0 {
			return Grant{}, fmt.Errorf("negative hold %d", req.Hold)
		}
	}
	var rec KeyRecord
	if req.Key != nil {
		rec = *req.Key
	} else {
		var found bool
		var err error
		if rec, found, err = a.LookupKey(ctx, req.KeyHash); err != nil {
			return Grant{}, err
		} else if !found {
			return Grant{}, ErrInvalidKey
		}
	}
	g := Grant{RequestID: req.RequestID, KeyID: rec.ID, User: rec.User}
	if err := checkKey(rec, req, now); errors.Is(err, ErrInvalidKey) {
		return Grant{}, err // who owns a dead key is nobody's business
	} else if err != nil {
		return g, err
	}
	g.Key = rec
	win := now.UnixMilli() / 60000
	reset := (win+1)*60000 - now.UnixMilli()
	if req.CheckOnly {
		g.Limits = rateState(rec.RPM, rec.TPM, 0, 0, reset)
		return g, nil
	}
	upto := ""
	if req.HoldUpTo > req.Hold {
		upto = strconv.FormatInt(int64(money.ClampNanos(req.HoldUpTo)), 10)
	}
	tokens := ""
	if req.Tokens > 0 {
		tokens = strconv.FormatInt(req.Tokens, 10)
	}
	u := rec.User
	keys := []string{acctKey(u), holdsKey(u), holdAmtKey(u), expiredKey(u), leasesKey(u), leaseDeadlinesKey(u),
		rateKey(u, rec.ID, now, "r"), rateKey(u, rec.ID, now, "t")}
	res, err := holdScript.Run(ctx, a.rdb, keys, now.UnixMilli(), int64(req.Hold), req.RequestID,
		now.Add(a.HoldTTL).UnixMilli(), upto, tokens, rec.RPM, rec.TPM).StringSlice()
	if err != nil {
		return Grant{}, err
	}
	switch res[0] {
	case "ok":
		g.Limits = rateState(rec.RPM, rec.TPM, atoi(res[1]), atoi(res[2]), reset)
		if rec.TPM > 0 {
			g.TokensCounted = max(req.Tokens, 0)
		}
		g.Hold = money.Nanos(atoi(res[3]))
		return g, nil
	case "quota":
		return g, ErrInsufficientQuota
	case "rate":
		return g, &RateLimitError{Kind: res[1], Limit: atoi(res[2]), Reset: time.Duration(reset) * time.Millisecond}
	case "dup":
		return Grant{}, fmt.Errorf("request id %q already holds a reservation", req.RequestID)
	default:
		return Grant{}, fmt.Errorf("authorize: unexpected reply %v", res)
	}
}

// checkKey is what Authorize checks of a key before touching the account:
// active, unexpired, the client address allowed, the model allowed (a
// name with a comma never is).
func checkKey(rec KeyRecord, req AuthRequest, now time.Time) error {
	switch {
	case !rec.Active || rec.ID == "" || rec.User == "":
		return ErrInvalidKey
	case !rec.ExpiresAt.IsZero() && !now.Before(rec.ExpiresAt):
		return ErrInvalidKey
	case !IPAllowed(rec.AllowedIPs, req.ClientIP):
		return ErrIPNotAllowed
	case req.Model != "" && len(rec.Models) > 0 &&
		(strings.Contains(req.Model, ",") || !slices.Contains(rec.Models, req.Model)):
		return ErrModelNotAllowed
	}
	return nil
}

// LookupKey reads the record of the key with the given hash; found is false
// when Redis has none.
func (a *Accounts) LookupKey(ctx context.Context, hash string) (rec KeyRecord, found bool, err error) {
	v, err := a.rdb.HMGet(ctx, keyRecordKey(hash), "id", "user", "status", "models", "expires", "rpm", "tpm", "ips").Result()
	if err != nil {
		return KeyRecord{}, false, err
	}
	str := func(i int) string { s, _ := v[i].(string); return s }
	if v[0] == nil {
		return KeyRecord{}, false, nil
	}
	rec = KeyRecord{ID: str(0), User: str(1), Active: str(2) == "active", Models: splitModels(str(3)),
		RPM: max(atoi(str(5)), 0), TPM: max(atoi(str(6)), 0), AllowedIPs: splitModels(str(7))}
	if ms := atoi(str(4)); ms > 0 {
		rec.ExpiresAt = time.UnixMilli(ms)
	}
	return rec, true, nil
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

// MaxAllowedIPs bounds a key's allowed_ips list (it is read on every
// request).
const MaxAllowedIPs = 100

// NormalizeAllowedIPs checks a key's allowed_ips (single addresses or CIDR
// ranges, IPv4 or IPv6) and returns them as canonical CIDR strings: host
// bits cleared ("10.1.2.3/8" → "10.0.0.0/8"), a single address as a /32 or
// /128, IPv4-mapped IPv6 as IPv4, duplicates dropped, order kept. An empty
// list means any address.
func NormalizeAllowedIPs(list []string) ([]string, error) {
	if len(list) > MaxAllowedIPs {
		return nil, fmt.Errorf("at most %d entries", MaxAllowedIPs)
	}
	var out []string
	seen := make(map[string]bool, len(list))
	for _, s := range list {
		p, err := parseAllowedIP(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		if c := p.String(); !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out, nil
}

func parseAllowedIP(s string) (netip.Prefix, error) {
	bad := fmt.Errorf("%q is not an IP address or CIDR range (like 203.0.113.7, 10.0.0.0/8 or 2001:db8::/32)", s)
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, bad
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, bad
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// IPAllowed reports whether ip may use a key with the given allowed_ips
// (as NormalizeAllowedIPs writes them). It is the Go twin of the check the
// authorize script makes, for keys served from the local cache while Redis
// is unreachable.
func IPAllowed(allowed []string, ip netip.Addr) bool {
	if len(allowed) == 0 {
		return true
	}
	if !ip.IsValid() {
		return false
	}
	ip16 := netip.AddrFrom16(ip.As16())
	for _, s := range allowed {
		if p, err := parseAllowedIP(s); err == nil && prefix16(p).Contains(ip16) {
			return true
		}
	}
	return false
}

// prefix16 writes p in the 128-bit space where IPv4 is IPv4-mapped, the
// space both checks match in (so ::/0 takes IPv4 addresses too).
func prefix16(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4() {
		return netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), p.Bits()+96)
	}
	return p
}

// addrBits writes an address for the authorize script's allowed_ips check:
// "b" and the 128 bits of its IPv6 form (IPv4 as IPv4-mapped), so that an
// allowed range is a plain string prefix of every address inside it. The
// zero Addr gives "" (unknown), which no range matches.
func addrBits(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	b16 := a.Unmap().As16()
	buf := make([]byte, 1, 129)
	buf[0] = 'b'
	for _, x := range b16 {
		for i := 7; i >= 0; i-- {
			buf = append(buf, '0'+(x>>i)&1)
		}
	}
	return string(buf)
}

// prefixBitsList writes each range (a CIDR or a single address) as the
// string prefix that every addrBits of an address inside it starts with.
// An entry that does not parse (it cannot come from NormalizeAllowedIPs)
// becomes "x", which no address matches: a damaged list fails closed,
// never open.
func prefixBitsList(allowed []string) []string {
	out := make([]string, len(allowed))
	for i, s := range allowed {
		p, err := parseAllowedIP(s)
		if err != nil {
			out[i] = "x"
			continue
		}
		p = prefix16(p)
		out[i] = addrBits(p.Addr())[:1+p.Bits()]
	}
	return out
}

// RenewHold moves the deadline of the live hold of request id on user's
// account to deadline, so a request still running is not taken for one
// whose node died. A hold already settled or expired is left alone.
func (a *Accounts) RenewHold(ctx context.Context, user, requestID string, deadline time.Time) error {
	return a.rdb.ZAddXX(ctx, holdsKey(user), redis.Z{Score: float64(deadline.UnixMilli()), Member: requestID}).Err()
}
