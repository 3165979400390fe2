package caddymodule

import (
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/lease"
)

// admitLocal admits a returning customer's request with no Redis round
// trip: the key record is one this node fetched lately (dropped at once by
// a revocation or change notice), the hold comes from the customer's
// balance lease, and a key's rpm/tpm are counted from this node's share of
// its windows (a round trip only when the share runs out). ok is false
// when it cannot (an unknown or stale key, no lease with enough in it):
// Redis then decides. A request it can judge locally and must refuse
// gives err.
func (h *Handler) admitLocal(r *http.Request, keyHash, model, requestID string, hold, upTo money.Nanos, tokens int64) (
	g billing.Grant, t lease.Ticket, ok bool, err error) {
	now := time.Now()
	rec, fresh := h.app.redis.keys.fresh(keyHash, now)
	if !fresh {
		return g, t, false, nil
	}
	g = billing.Grant{KeyID: rec.ID, User: rec.User}
	switch {
	case !rec.Active || !rec.ExpiresAt.IsZero() && !now.Before(rec.ExpiresAt):
		return g, t, false, nil // Redis says why
	case !billing.IPAllowed(rec.AllowedIPs, clientAddr(r)):
		return g, t, true, billing.ErrIPNotAllowed
	case model != "" && len(rec.Models) > 0 && !slices.Contains(rec.Models, model):
		return g, t, true, billing.ErrModelNotAllowed
	}
	t, ok = h.app.redis.leases.Admit(rec.User, hold, upTo)
	if !ok {
		return g, t, false, nil
	}
	if rec.RPM > 0 || rec.TPM > 0 {
		_, nodes := h.app.leaseSizes()
		st, err := h.app.redis.rates.Admit(r.Context(), lease.RateRequest{User: rec.User, KeyID: rec.ID,
			RPM: rec.RPM, TPM: rec.TPM, Tokens: tokens, Nodes: nodes})
		if err != nil {
			h.app.redis.leases.Release(t)
			if errors.Is(err, billing.ErrRateLimited) {
				return g, lease.Ticket{}, true, err
			}
			return g, lease.Ticket{}, false, nil // Redis says
		}
		g.Limits = st
		if rec.TPM > 0 {
			g.TokensCounted = tokens
		}
	}
	g.RequestID, g.Hold, g.Key, g.Lease = requestID, t.Hold, rec, t.LeaseID()
	return g, t, true, nil
}
