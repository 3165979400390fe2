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

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

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
	case "noacct":
		// Redis lost its data. A key record taken from the node's copy
		// may be gone with it: read it to tell which.
		if req.Key != nil {
			if _, found, err := a.LookupKey(ctx, req.KeyHash); err != nil {
				return Grant{}, err
			} else if !found {
				return Grant{}, ErrInvalidKey
			}
		}
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
