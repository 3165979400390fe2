package accounting

import (
	"errors"
	"testing"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// An issued key works at once; one Redis could not take is never handed
// out and stays revoked in the ledger; a revoked key stops working.
func TestIssueAndRevokeKey(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	u := f.user()

	_, _, err := f.downBooks().IssueKey(ctx, usagelog.Key{UserID: u, Name: "lost"})
	var re *RedisError
	if !errors.As(err, &re) {
		t.Fatalf("issue with redis down: %v, want a *RedisError", err)
	}
	keys, err := f.store.ListKeys(ctx, u)
	if err != nil || len(keys) != 1 || keys[0].Status != usagelog.KeyRevoked {
		t.Fatalf("the key redis missed: %+v, %v", keys, err)
	}

	k, secret, err := f.books.IssueKey(ctx, usagelog.Key{UserID: u, Name: "n", Models: []string{"m"}, RPM: 5})
	if err != nil || k.Status != usagelog.KeyActive || k.Hash != billing.HashKey(secret) || k.Prefix != secret[:11] {
		t.Fatalf("issue: %+v, %v", k, err)
	}
	g, err := f.accounts.Authorize(ctx, billing.AuthRequest{KeyHash: k.Hash, CheckOnly: true})
	if err != nil || g.KeyID != k.ID || g.User != u {
		t.Fatalf("the issued key: %+v, %v", g, err)
	}
	if _, err := f.books.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.accounts.Authorize(ctx, billing.AuthRequest{KeyHash: k.Hash, CheckOnly: true}); !errors.Is(err, billing.ErrInvalidKey) {
		t.Fatalf("a revoked key: %v", err)
	}
	if _, err := f.books.RevokeKey(ctx, "key_nope"); !errors.Is(err, usagelog.ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	if _, _, err := f.books.IssueKey(ctx, usagelog.Key{UserID: "nobody"}); !errors.Is(err, usagelog.ErrNotFound) {
		t.Fatalf("issue for an unknown user: %v", err)
	}
}
