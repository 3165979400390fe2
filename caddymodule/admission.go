package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// This file admits a request: the key, the client address, Authorize
// (with on_redis_error allow), and the answers to what it refuses.

// authorize runs Authorize and remembers the keys Redis confirmed; with
// on_redis_error allow, when Redis cannot be reached, it admits a
// remembered key without a hold.
func (h *Handler) authorize(ctx context.Context, req billing.AuthRequest) (billing.Grant, error) {
	now := time.Now()
	cache := h.app.redis.keys
	since := cache.epoch()
	if rec, ok := cache.fresh(req.KeyHash, now); ok {
		req.Key = &rec // no second read of a key fetched lately
	}
	g, err := h.app.accounts.Authorize(billing.WithOp(ctx, billing.OpAuthorize), req)
	if err == nil && g.Key.ID != "" {
		// The key's next requests may be admitted from memory.
		cache.put(req.KeyHash, g.Key, now, since)
	}
	if h.OnRedisError != "allow" || err == nil || isRefusal(err) {
		return g, err
	}
	rec, ok := cache.get(req.KeyHash, now)
	if !ok || !rec.Active || (!rec.ExpiresAt.IsZero() && !now.Before(rec.ExpiresAt)) {
		return g, err
	}
	if !billing.IPAllowed(rec.AllowedIPs, req.ClientIP) {
		return billing.Grant{KeyID: rec.ID, User: rec.User}, billing.ErrIPNotAllowed
	}
	if req.Model != "" && len(rec.Models) > 0 && !slices.Contains(rec.Models, req.Model) {
		return billing.Grant{KeyID: rec.ID, User: rec.User}, billing.ErrModelNotAllowed
	}
	h.log.Warn("redis unavailable; admitting a cached key without a hold",
		zap.String("key_id", rec.ID), zap.String("request_id", req.RequestID), zap.Error(err))
	return billing.Grant{KeyID: rec.ID, User: rec.User, RequestID: req.RequestID, Key: rec, NoHold: true}, nil
}

// checkKey checks the key (exists, active, unexpired, allowed from the
// client's address) without reserving or counting anything.
func (h *Handler) checkKey(r *http.Request, keyHash string) (billing.Grant, error) {
	return h.authorize(r.Context(), billing.AuthRequest{KeyHash: keyHash, CheckOnly: true, ClientIP: clientAddr(r)})
}

// isRefusal tells Authorize's answers from Redis failures.
func isRefusal(err error) bool {
	return errors.Is(err, billing.ErrInvalidKey) || errors.Is(err, billing.ErrIPNotAllowed) || errors.Is(err, billing.ErrModelNotAllowed) ||
		errors.Is(err, billing.ErrInsufficientQuota) || errors.Is(err, billing.ErrRateLimited)
}

// answerAuthError answers a request whose admission failed with err (a
// refusal of Authorize, or the client gone).
func (h *Handler) answerAuthError(w http.ResponseWriter, r *http.Request, err error, model string) {
	if r.Context().Err() != nil {
		// The client left while its key was being checked: not a Redis
		// failure.
		h.writeRefusal(w, errClientClosed, model)
		return
	}
	var rl *billing.RateLimitError
	if errors.As(err, &rl) {
		secs := int64((rl.Reset + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
		hd := w.Header()
		if rl.Kind == "tokens" {
			hd.Set("X-Ratelimit-Limit-Tokens", strconv.FormatInt(rl.Limit, 10))
			hd.Set("X-Ratelimit-Remaining-Tokens", "0")
			hd.Set("X-Ratelimit-Reset-Tokens", formatReset(rl.Reset))
		} else {
			hd.Set("X-Ratelimit-Limit-Requests", strconv.FormatInt(rl.Limit, 10))
			hd.Set("X-Ratelimit-Remaining-Requests", "0")
			hd.Set("X-Ratelimit-Reset-Requests", formatReset(rl.Reset))
		}
		metrics.rateLimited.WithLabelValues(rl.Kind).Inc()
		h.writeRefusal(w, errRateLimited(rl), model)
		return
	}
	h.writeRefusal(w, h.authError(err, model), model)
}

// writeRefusal answers a request refused before it was forwarded, and counts it
// under the price pattern of the request's model (or "").
func (h *Handler) writeRefusal(w http.ResponseWriter, e *apiError, model string) {
	countRefusal(h.app.prices.Pattern(model), e)
	e.write(w)
}

// setRateHeaders adds OpenAI's x-ratelimit-* headers for a limited key.
func setRateHeaders(h http.Header, s billing.RateState) {
	if s.RequestLimit > 0 {
		h.Set("X-Ratelimit-Limit-Requests", strconv.FormatInt(s.RequestLimit, 10))
		h.Set("X-Ratelimit-Remaining-Requests", strconv.FormatInt(s.RequestsLeft, 10))
		h.Set("X-Ratelimit-Reset-Requests", formatReset(s.Reset))
	}
	if s.TokenLimit > 0 {
		h.Set("X-Ratelimit-Limit-Tokens", strconv.FormatInt(s.TokenLimit, 10))
		h.Set("X-Ratelimit-Remaining-Tokens", strconv.FormatInt(s.TokensLeft, 10))
		h.Set("X-Ratelimit-Reset-Tokens", formatReset(s.Reset))
	}
}

// formatReset writes a window reset as OpenAI does ("1s", "6m0s", "250ms").
func formatReset(d time.Duration) string {
	if d >= time.Second {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Millisecond).String()
}

// authError maps an Authorize error to the client's answer.
func (h *Handler) authError(err error, model string) *apiError {
	switch {
	case errors.Is(err, billing.ErrInvalidKey):
		return errInvalidKey
	case errors.Is(err, billing.ErrIPNotAllowed):
		return errIPNotAllowed
	case errors.Is(err, billing.ErrModelNotAllowed):
		return errModelNotAllowed(model)
	case errors.Is(err, billing.ErrInsufficientQuota):
		return errQuota
	}
	h.log.Error("redis unavailable; denying request", zap.Error(err))
	return errUnavailable
}

// setIdentity exposes who is calling to later handlers and the access log.
func (h *Handler) setIdentity(r *http.Request, g billing.Grant, model string) {
	keyID := any(g.KeyID) // boxed once for both
	if vars, ok := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any); ok {
		vars["aitoken.user"] = g.User
		vars["aitoken.key_id"] = keyID
		if model != "" {
			vars["aitoken.model"] = model
		}
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.auth.user.id", keyID)
	}
}

// errIPNotAllowed refuses a key used from outside its allowed_ips.
var errIPNotAllowed = &apiError{http.StatusForbidden, "permission_error", "ip_not_allowed",
	"This API key may not be used from your IP address.", ""}

// clientAddr is the client's address as Caddy determined it (the remote
// address, or the forwarded one when the request came through one of the
// server's trusted_proxies); the zero Addr when unknown.
func clientAddr(r *http.Request) netip.Addr {
	s, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.WithZone("")
}

// keyFromRequest returns the API key from Authorization: Bearer or x-api-key.
func keyFromRequest(r *http.Request) string {
	if auth := header(r.Header, hdrAuthorization); auth != "" {
		if scheme, token, ok := strings.Cut(auth, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(token)
		}
	}
	return strings.TrimSpace(header(r.Header, hdrAPIKey))
}

// keepHold renews g's hold deadline every third of the hold's lifetime
// while the request runs, so the hold of a long request (a slow reader, a
// long generation) never expires under it and lets its balance be spent
// twice. The returned func ends it.
func (h *Handler) keepHold(g billing.Grant) (stop func()) {
	ttl := h.app.accounts.HoldTTL
	if ttl <= 0 {
		return func() {}
	}
	var (
		mu      sync.Mutex
		stopped bool
		t       *time.Timer
	)
	renew := func() {
		ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		err := h.app.accounts.RenewHold(ctx, g.User, g.RequestID, time.Now().Add(ttl))
		cancel()
		if err != nil {
			h.log.Warn("renewing the hold of a long request", zap.String("request_id", g.RequestID), zap.Error(err))
		}
		mu.Lock()
		if !stopped {
			t.Reset(ttl / 3)
		}
		mu.Unlock()
	}
	mu.Lock()
	t = time.AfterFunc(ttl/3, renew)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}
