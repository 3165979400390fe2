package caddymodule

import (
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// A record read from Redis before a change notice dropped the key is not
// kept: it may be the record from before the change.
func TestKeyCacheIgnoresAReadOlderThanADrop(t *testing.T) {
	c := newKeyCache()
	now := time.Now()
	old := billing.KeyRecord{ID: "k", User: "u", Active: true}
	since := c.epoch() // a request starts reading the key
	c.drop("h")        // the key changes: the notice arrives
	c.put("h", old, now, since)
	if _, ok := c.fresh("h", now); ok {
		t.Fatal("a record read before the notice was kept")
	}
	since = c.epoch()
	c.put("h", old, now, since)
	if _, ok := c.fresh("h", now); !ok {
		t.Fatal("a record read after the notice was not kept")
	}
}
