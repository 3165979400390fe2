package caddymodule

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/lease"
)

// keyCache remembers recently seen key records. A record fetched in the
// last keyFresh admits the key's requests with no Redis round trip (with
// a balance lease); with on_redis_error allow, one Redis confirmed in the
// last keyCacheTTL is still served while Redis is unreachable. A
// revocation or change notice on Redis pub/sub drops the key at once on
// every node; entries also expire on their own.
type keyCache struct {
	mu      sync.RWMutex
	entries map[string]cachedKey
	// drops counts drops and clears: a record read before one may be the
	// old one, and is not put (see put).
	drops uint64
}

type cachedKey struct {
	rec   billing.KeyRecord
	fresh time.Time // admits from memory until then
	until time.Time
}

// Bounds of the key cache.
const (
	keyCacheTTL  = 10 * time.Minute
	keyFresh     = time.Minute
	keyCacheSize = 100_000
)

func newKeyCache() *keyCache { return &keyCache{entries: make(map[string]cachedKey)} }

func (c *keyCache) get(hash string, now time.Time) (billing.KeyRecord, bool) {
	c.mu.RLock()
	e, ok := c.entries[hash]
	c.mu.RUnlock()
	if !ok || now.After(e.until) {
		return billing.KeyRecord{}, false
	}
	return e.rec, true
}

// fresh returns the record of hash if it was fetched in the last keyFresh.
func (c *keyCache) fresh(hash string, now time.Time) (billing.KeyRecord, bool) {
	c.mu.RLock()
	e, ok := c.entries[hash]
	c.mu.RUnlock()
	if !ok || !now.Before(e.fresh) {
		return billing.KeyRecord{}, false
	}
	return e.rec, true
}

// epoch is the drop count now, to pass to put for a record about to be
// read from Redis.
func (c *keyCache) epoch() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.drops
}

// put remembers rec, read from Redis after epoch returned since: if a
// drop (a revocation or change notice) came in since, rec may predate the
// change and is not kept.
func (c *keyCache) put(hash string, rec billing.KeyRecord, now time.Time, since uint64) {
	c.mu.Lock()
	if c.drops != since {
		c.mu.Unlock()
		return
	}
	if len(c.entries) >= keyCacheSize {
		for h, e := range c.entries { // evict what has expired, else anything
			if now.After(e.until) || len(c.entries) >= keyCacheSize {
				delete(c.entries, h)
			}
			if len(c.entries) < keyCacheSize*9/10 {
				break
			}
		}
	}
	c.entries[hash] = cachedKey{rec: rec, fresh: now.Add(keyFresh), until: now.Add(keyCacheTTL)}
	c.mu.Unlock()
}

func (c *keyCache) drop(hash string) {
	c.mu.Lock()
	c.drops++
	delete(c.entries, hash)
	c.mu.Unlock()
}

func (c *keyCache) clear() {
	c.mu.Lock()
	c.drops++
	clear(c.entries)
	c.mu.Unlock()
}

// listenNotices drops revoked or changed keys from the cache, and recalls
// the leases of accounts whose balance went down, until ctx ends. When the
// subscription breaks (notices may have been missed) the whole cache is
// dropped and every lease recalled.
func (c *keyCache) listenNotices(ctx context.Context, rdb redis.UniversalClient, leases *lease.Book, log *zap.Logger) {
	forget := func() {
		c.clear()
		leases.RecallAll()
	}
	for ctx.Err() == nil {
		ps := rdb.Subscribe(ctx, billing.RevocationChannel, billing.RecallChannel)
		if _, err := ps.Receive(ctx); err != nil {
			_ = ps.Close()
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		forget() // notices sent while unsubscribed are lost
		// go-redis resubscribes by itself after a broken connection and
		// then delivers a *redis.Subscription: forget on each.
		ch := ps.ChannelWithSubscriptions(redis.WithChannelHealthCheckInterval(5 * time.Second))
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case m, ok := <-ch:
				if !ok {
					break loop
				}
				switch m := m.(type) {
				case *redis.Message:
					if m.Channel == billing.RecallChannel {
						leases.Recall(m.Payload)
					} else {
						c.drop(m.Payload)
					}
				case *redis.Subscription:
					forget()
				}
			}
		}
		_ = ps.Close()
		if ctx.Err() == nil {
			log.Warn("notice subscription lost; key cache cleared and leases recalled")
			forget()
		}
	}
}
