package billing

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

// newTestAccounts starts a private redis-server for tb and returns Accounts
// on it together with a raw client for inspecting Redis directly.
func newTestAccounts(tb testing.TB) (*Accounts, *redis.Client) {
	tb.Helper()
	srv := testredis.Start(tb)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	tb.Cleanup(func() { _ = rdb.Close() })
	return NewAccounts(rdb), rdb
}

// putActiveKey stores an active key for user and returns its hash.
func putActiveKey(t *testing.T, a *Accounts, secret, id, user string, models ...string) string {
	t.Helper()
	hash := HashKey(secret)
	if err := a.PutKey(t.Context(), hash, KeyRecord{ID: id, User: user, Active: true, Models: models}); err != nil {
		t.Fatalf("PutKey: %v", err)
	}
	return hash
}

func credit(t *testing.T, a *Accounts, user string, amount money.Nanos) {
	t.Helper()
	if _, err := a.Credit(t.Context(), user, amount); err != nil {
		t.Fatalf("Credit: %v", err)
	}
}

func wantBalance(t *testing.T, a *Accounts, user string, balance, held money.Nanos) {
	t.Helper()
	b, h, err := a.Balance(t.Context(), user)
	if err != nil {
		t.Fatalf("Balance: %v", err)
	}
	if b != balance || h != held {
		t.Fatalf("Balance(%s) = balance %d, held %d; want balance %d, held %d", user, b, h, balance, held)
	}
}

// holdIDs returns the request IDs in the account's holds ZSET and in its
// hold-amount HASH.
func holdIDs(t *testing.T, rdb *redis.Client, user string) (zset []string, amts map[string]string) {
	t.Helper()
	ctx := t.Context()
	zset, err := rdb.ZRange(ctx, holdsKey(user), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	amts, err = rdb.HGetAll(ctx, holdAmtKey(user)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return zset, amts
}

func streamLen(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	n, err := UsageBacklog(t.Context(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAuthorizeOK(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	hash := putActiveKey(t, a, "sk-ait-ok", "key_1", "alice")
	credit(t, a, "alice", 1_000)

	g, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Model: "gpt-4o", Hold: 250, RequestID: "req_1"})
	if err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	want := Grant{KeyID: "key_1", User: "alice", RequestID: "req_1", Hold: 250}
	if !sameGrant(g, want) {
		t.Fatalf("grant = %+v, want %+v", g, want)
	}
	wantBalance(t, a, "alice", 1_000, 250)

	zset, amts := holdIDs(t, rdb, "alice")
	if len(zset) != 1 || zset[0] != "req_1" || len(amts) != 1 || amts["req_1"] != "250" {
		t.Fatalf("holds = %v, amounts = %v; want req_1 → 250", zset, amts)
	}
}

func TestAuthorizeHoldDeadline(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	hash := putActiveKey(t, a, "sk-ait-deadline", "key_1", "alice")
	credit(t, a, "alice", 1_000)

	before := time.Now().Add(DefaultHoldTTL).UnixMilli()
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 1, RequestID: "req_1"}); err != nil {
		t.Fatal(err)
	}
	after := time.Now().Add(DefaultHoldTTL).UnixMilli()
	score, err := rdb.ZScore(ctx, holdsKey("alice"), "req_1").Result()
	if err != nil {
		t.Fatal(err)
	}
	if int64(score) < before || int64(score) > after {
		t.Fatalf("hold deadline %d not within [%d, %d]", int64(score), before, after)
	}
}

func TestPutKeyReplaces(t *testing.T) {
	a, _ := newTestAccounts(t)
	ctx := t.Context()
	hash := putActiveKey(t, a, "sk-ait-replace", "key_1", "alice", "gpt-4o")
	if err := a.PutKey(ctx, hash, KeyRecord{ID: "key_2", User: "bob", Active: true}); err != nil {
		t.Fatal(err)
	}
	// The new record has no allowlist: any model goes.
	g, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Model: "claude-sonnet", CheckOnly: true})
	if err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	if g.KeyID != "key_2" || g.User != "bob" {
		t.Fatalf("grant = %+v, want key_2 of bob", g)
	}
}

func TestAuthorizeInvalidKey(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	credit(t, a, "alice", 1_000_000)

	revoked := putActiveKey(t, a, "sk-ait-revoked", "key_r", "alice")
	if err := a.RevokeKey(ctx, revoked); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	inactive := HashKey("sk-ait-inactive")
	if err := a.PutKey(ctx, inactive, KeyRecord{ID: "key_i", User: "alice", Active: false}); err != nil {
		t.Fatal(err)
	}
	expired := HashKey("sk-ait-expired")
	if err := a.PutKey(ctx, expired, KeyRecord{ID: "key_e", User: "alice", Active: true,
		ExpiresAt: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		hash string
	}{
		{"unknown", HashKey("sk-ait-never-stored")},
		{"empty hash", ""},
		{"revoked", revoked},
		{"stored inactive", inactive},
		{"expired", expired},
	} {
		for _, check := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/checkOnly=%v", tc.name, check), func(t *testing.T) {
				g, err := a.Authorize(ctx, AuthRequest{KeyHash: tc.hash, Model: "gpt-4o", Hold: 10,
					RequestID: "req_" + tc.name, CheckOnly: check})
				if !errors.Is(err, ErrInvalidKey) {
					t.Fatalf("err = %v, want ErrInvalidKey", err)
				}
				if !sameGrant(g, Grant{}) {
					t.Fatalf("grant = %+v, want zero", g)
				}
			})
		}
	}
	// Nothing was reserved by any refusal.
	wantBalance(t, a, "alice", 1_000_000, 0)
	if zset, amts := holdIDs(t, rdb, "alice"); len(zset) != 0 || len(amts) != 0 {
		t.Fatalf("refusals left holds %v %v", zset, amts)
	}
}

func TestAuthorizeExpiry(t *testing.T) {
	a, _ := newTestAccounts(t)
	ctx := t.Context()
	credit(t, a, "alice", 1_000)

	future := HashKey("sk-ait-future")
	if err := a.PutKey(ctx, future, KeyRecord{ID: "key_f", User: "alice", Active: true,
		ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: future, Hold: 1, RequestID: "req_1"}); err != nil {
		t.Fatalf("key expiring in an hour: %v", err)
	}

	// Re-put the same key with an expiry in the past: refused from now on.
	if err := a.PutKey(ctx, future, KeyRecord{ID: "key_f", User: "alice", Active: true,
		ExpiresAt: time.Now().Add(-time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: future, CheckOnly: true}); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("expired key: err = %v, want ErrInvalidKey", err)
	}

	// A zero ExpiresAt never expires.
	forever := putActiveKey(t, a, "sk-ait-forever", "key_n", "alice")
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: forever, CheckOnly: true}); err != nil {
		t.Fatalf("key without expiry: %v", err)
	}
}

func TestAuthorizeModelAllowlist(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	credit(t, a, "alice", 1_000)
	limited := putActiveKey(t, a, "sk-ait-limited", "key_l", "alice", "gpt-4o", "deepseek-chat")
	open := putActiveKey(t, a, "sk-ait-open", "key_o", "alice")

	for i, tc := range []struct {
		hash  string
		model string
		want  error
	}{
		{limited, "gpt-4o", nil},
		{limited, "deepseek-chat", nil},
		{limited, "", nil}, // empty model skips the check
		{limited, "claude-sonnet", ErrModelNotAllowed},
		{limited, "gpt-4", ErrModelNotAllowed},       // prefix of an allowed model
		{limited, "gpt-4o-mini", ErrModelNotAllowed}, // allowed model is its prefix
		{limited, "4o", ErrModelNotAllowed},          // substring
		{limited, "gpt-4o,deepseek-chat", ErrModelNotAllowed},
		{open, "claude-sonnet", nil}, // no allowlist: every model
		{open, "", nil},
	} {
		for _, check := range []bool{true, false} {
			name := fmt.Sprintf("%d/%s/checkOnly=%v", i, tc.model, check)
			_, held0, err := a.Balance(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			rid := "req_" + strconv.Itoa(i) + strconv.FormatBool(check)
			g, err := a.Authorize(ctx, AuthRequest{KeyHash: tc.hash, Model: tc.model, Hold: 1,
				RequestID: rid, CheckOnly: check})
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("%s: err = %v, want %v", name, err, tc.want)
			}
			_, held1, err := a.Balance(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			wantHeld := held0
			if tc.want == nil && !check {
				wantHeld++
				if g.Hold != 1 {
					t.Fatalf("%s: grant hold %d, want 1", name, g.Hold)
				}
			}
			if held1 != wantHeld {
				t.Fatalf("%s: held %d → %d, want %d", name, held0, held1, wantHeld)
			}
			if tc.want != nil {
				if n, _ := rdb.HExists(ctx, holdAmtKey("alice"), rid).Result(); n {
					t.Fatalf("%s: refused request left a hold", name)
				}
			}
		}
	}
}

func TestAuthorizeCheckOnlyReservesNothing(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	hash := putActiveKey(t, a, "sk-ait-check", "key_c", "alice", "gpt-4o")

	// No account at all and a hold far beyond any balance: CheckOnly
	// still admits, because it only validates the key and model.
	g, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Model: "gpt-4o", Hold: 1 << 50,
		RequestID: "req_check", CheckOnly: true})
	if err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	want := Grant{KeyID: "key_c", User: "alice", RequestID: "req_check"}
	if !sameGrant(g, want) {
		t.Fatalf("grant = %+v, want %+v (no hold)", g, want)
	}
	wantBalance(t, a, "alice", 0, 0)
	for _, k := range []string{acctKey("alice"), holdsKey("alice"), holdAmtKey("alice")} {
		if n, err := rdb.Exists(ctx, k).Result(); err != nil || n != 0 {
			t.Fatalf("CheckOnly created %s (exists=%d, err=%v)", k, n, err)
		}
	}
}

func TestAuthorizeInsufficientQuota(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	hash := putActiveKey(t, a, "sk-ait-quota", "key_q", "alice")
	credit(t, a, "alice", 1_000)

	auth := func(rid string, hold money.Nanos) (Grant, error) {
		return a.Authorize(ctx, AuthRequest{KeyHash: hash, Model: "gpt-4o", Hold: hold, RequestID: rid})
	}
	if _, err := auth("r1", 600); err != nil {
		t.Fatalf("first hold: %v", err)
	}
	wantBalance(t, a, "alice", 1_000, 600)

	// Available is 400: 600 is refused even though the balance is 1000.
	g, err := auth("r2", 600)
	if !errors.Is(err, ErrInsufficientQuota) {
		t.Fatalf("hold over available: err = %v, want ErrInsufficientQuota", err)
	}
	if g.KeyID != "key_q" || g.User != "alice" || g.Hold != 0 {
		t.Fatalf("refused grant = %+v", g)
	}
	wantBalance(t, a, "alice", 1_000, 600)
	if ok, _ := rdb.HExists(ctx, holdAmtKey("alice"), "r2").Result(); ok {
		t.Fatal("refused hold was recorded")
	}

	// Exactly the available amount is admitted.
	if _, err := auth("r3", 400); err != nil {
		t.Fatalf("hold of exactly the available balance: %v", err)
	}
	wantBalance(t, a, "alice", 1_000, 1_000)
	if _, err := auth("r4", 1); !errors.Is(err, ErrInsufficientQuota) {
		t.Fatalf("one nano over: err = %v, want ErrInsufficientQuota", err)
	}
	// A zero hold is always covered while available ≥ 0.
	if _, err := auth("r5", 0); err != nil {
		t.Fatalf("zero hold: %v", err)
	}
	wantBalance(t, a, "alice", 1_000, 1_000)

	// No account at all: nothing is available.
	bob := putActiveKey(t, a, "sk-ait-bob", "key_b", "bob")
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: bob, Hold: 1, RequestID: "rb"}); !errors.Is(err, ErrInsufficientQuota) {
		t.Fatalf("no account: err = %v, want ErrInsufficientQuota", err)
	}

	// A negative balance (debited past zero) refuses even a zero hold.
	credit(t, a, "bob", -5)
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: bob, Hold: 0, RequestID: "rb0"}); !errors.Is(err, ErrInsufficientQuota) {
		t.Fatalf("negative balance: err = %v, want ErrInsufficientQuota", err)
	}
}

func TestAuthorizeNegativeHold(t *testing.T) {
	a, _ := newTestAccounts(t)
	hash := putActiveKey(t, a, "sk-ait-neg", "key_n", "alice")
	credit(t, a, "alice", 1_000)
	_, err := a.Authorize(t.Context(), AuthRequest{KeyHash: hash, Hold: -1, RequestID: "r"})
	if err == nil || errors.Is(err, ErrInvalidKey) || errors.Is(err, ErrInsufficientQuota) {
		t.Fatalf("negative hold: err = %v, want a plain error", err)
	}
	wantBalance(t, a, "alice", 1_000, 0)
}

func TestSettle(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	hash := putActiveKey(t, a, "sk-ait-settle", "key_s", "alice")
	credit(t, a, "alice", 10_000)

	g1, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 3_000, RequestID: "req_1"})
	if err != nil {
		t.Fatal(err)
	}
	g2, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 2_000, RequestID: "req_2"})
	if err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "alice", 10_000, 5_000)

	record := []byte(`{"request_id":"req_1","user":"alice","cost":"0.000001234","model":"gpt-4o","note":"ünïcode \" \\ \n"}`)
	bal, err := settleBal(ctx, a, g1, 1_234, record)
	if err != nil {
		t.Fatalf("Settle: %v", err)
	}
	if bal != 10_000-1_234 {
		t.Fatalf("Settle returned balance %d, want %d", bal, 10_000-1_234)
	}
	// Only req_1's hold is gone: held is exactly req_2's.
	wantBalance(t, a, "alice", 10_000-1_234, 2_000)
	zset, amts := holdIDs(t, rdb, "alice")
	if len(zset) != 1 || zset[0] != "req_2" || len(amts) != 1 || amts["req_2"] != "2000" {
		t.Fatalf("after settling req_1: holds %v, amounts %v; want only req_2 → 2000", zset, amts)
	}

	msgs, err := rdb.XRange(ctx, UsageStreamOf("alice"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("stream has %d entries, want 1", len(msgs))
	}
	if len(msgs[0].Values) != 1 || msgs[0].Values["r"] != string(record) {
		t.Fatalf("stream entry = %v, want r=%s", msgs[0].Values, record)
	}

	// Costs above the hold are debited in full.
	bal, err = settleBal(ctx, a, g2, 2_500, []byte(`{"request_id":"req_2"}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := money.Nanos(10_000 - 1_234 - 2_500); bal != want {
		t.Fatalf("balance %d, want %d", bal, want)
	}
	wantBalance(t, a, "alice", 10_000-1_234-2_500, 0)
	if zset, amts := holdIDs(t, rdb, "alice"); len(zset) != 0 || len(amts) != 0 {
		t.Fatalf("holds left after settling all: %v %v", zset, amts)
	}
	if n := streamLen(t, rdb); n != 2 {
		t.Fatalf("stream length %d, want 2", n)
	}
}

func TestSettleZeroCostAndBinaryRecord(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	hash := putActiveKey(t, a, "sk-ait-zero", "key_z", "alice")
	credit(t, a, "alice", 100)
	g, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 100, RequestID: "req_z"})
	if err != nil {
		t.Fatal(err)
	}
	record := []byte{0, 1, 2, 0xff, '\r', '\n', 'x'}
	if _, err := settleBal(ctx, a, g, 0, record); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "alice", 100, 0)
	msgs, err := rdb.XRange(ctx, UsageStreamOf("alice"), "-", "+").Result()
	if err != nil || len(msgs) != 1 || msgs[0].Values["r"] != string(record) {
		t.Fatalf("stream = %v, %v; want one entry with the exact record bytes", msgs, err)
	}
}

func TestSettleReleasedHold(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	hash := putActiveKey(t, a, "sk-ait-late", "key_l", "alice")
	credit(t, a, "alice", 1_000)

	// req_old's hold is born expired; the next Authorize releases it.
	a.HoldTTL = -time.Minute
	old, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 700, RequestID: "req_old"})
	if err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "alice", 1_000, 700)
	a.HoldTTL = time.Hour
	cur, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 300, RequestID: "req_cur"})
	if err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "alice", 1_000, 300)

	// The late settlement of req_old still debits its cost, and leaves
	// req_cur's hold alone.
	bal, err := settleBal(ctx, a, old, 650, []byte(`{"request_id":"req_old"}`))
	if err != nil {
		t.Fatal(err)
	}
	if bal != 350 {
		t.Fatalf("balance %d, want 350", bal)
	}
	wantBalance(t, a, "alice", 350, 300)

	// Settling a grant whose hold never existed (or was settled already)
	// debits and never pushes held below the live holds.
	ghost := Grant{KeyID: "key_l", User: "alice", RequestID: "req_ghost", Hold: 10_000}
	if _, err := settleBal(ctx, a, ghost, 50, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "alice", 300, 300)

	if _, err := settleBal(ctx, a, cur, 300, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "alice", 0, 0)
	// Settling req_cur again: debits again, held stays at zero.
	if _, err := settleBal(ctx, a, cur, 1, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "alice", -1, 0)
	if n := streamLen(t, rdb); n != 4 {
		t.Fatalf("stream length %d, want 4 (one per Settle)", n)
	}
}

func TestExpiredHoldsReleasedByAuthorize(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	hash := putActiveKey(t, a, "sk-ait-expire", "key_x", "alice")
	credit(t, a, "alice", 1_000)

	// Two holds whose deadline is already past, one live hold.
	a.HoldTTL = -time.Second
	for _, rid := range []string{"dead_1", "dead_2"} {
		if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 400, RequestID: rid}); err != nil {
			t.Fatal(err)
		}
	}
	// dead_2 released dead_1 (already past) and took its place.
	wantBalance(t, a, "alice", 1_000, 400)

	a.HoldTTL = time.Hour
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 500, RequestID: "live"}); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "alice", 1_000, 500)

	// A hold for the whole remaining balance fails while "live" holds…
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 600, RequestID: "big"}); !errors.Is(err, ErrInsufficientQuota) {
		t.Fatalf("err = %v, want ErrInsufficientQuota", err)
	}
	zset, amts := holdIDs(t, rdb, "alice")
	if len(zset) != 1 || zset[0] != "live" || len(amts) != 1 {
		t.Fatalf("holds %v, amounts %v; want only live", zset, amts)
	}

	// CheckOnly releases nothing.
	a.HoldTTL = -time.Second
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 100, RequestID: "dead_3"}); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "alice", 1_000, 600)
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, CheckOnly: true}); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "alice", 1_000, 600)

	// A refused Authorize still releases the expired holds (the release
	// runs before the quota check), so dead_3 goes, live stays.
	a.HoldTTL = time.Hour
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 501, RequestID: "big2"}); !errors.Is(err, ErrInsufficientQuota) {
		t.Fatalf("err = %v, want ErrInsufficientQuota", err)
	}
	wantBalance(t, a, "alice", 1_000, 500)
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 500, RequestID: "fits"}); err != nil {
		t.Fatalf("available balance after release: %v", err)
	}
	wantBalance(t, a, "alice", 1_000, 1_000)
}

func TestExpiredHoldsReleasedInBatches(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	hash := putActiveKey(t, a, "sk-ait-batch", "key_b", "alice")
	credit(t, a, "alice", 1_000)

	// 100 expired holds of 1 nano, written directly (Authorize would
	// release each previous one).
	past := time.Now().Add(-time.Minute).UnixMilli()
	pipe := rdb.TxPipeline()
	for i := range 100 {
		rid := "dead_" + strconv.Itoa(i)
		pipe.ZAdd(ctx, holdsKey("alice"), redis.Z{Score: float64(past), Member: rid})
		pipe.HSet(ctx, holdAmtKey("alice"), rid, 1)
	}
	pipe.HIncrBy(ctx, acctKey("alice"), "held", 100)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "alice", 1_000, 100)

	// Each Authorize releases a bounded batch; a few bring held back down
	// to the live holds only.
	for i := range 3 {
		if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 0, RequestID: "zero_" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	wantBalance(t, a, "alice", 1_000, 0)
	if zset, amts := holdIDs(t, rdb, "alice"); len(zset) != 3 || len(amts) != 3 {
		t.Fatalf("holds %d, amounts %d; want the 3 live zero holds", len(zset), len(amts))
	}
}

func TestRevokeKeyPublishes(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	hash := putActiveKey(t, a, "sk-ait-revoke", "key_r", "alice")

	sub := rdb.Subscribe(ctx, RevocationChannel)
	defer sub.Close()
	// Wait for the subscription to be confirmed before publishing.
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatalf("subscribe: %v", err)
	}

	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, CheckOnly: true}); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	if err := a.RevokeKey(ctx, hash); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatalf("no revocation message: %v", err)
	}
	if msg.Channel != RevocationChannel || msg.Payload != hash {
		t.Fatalf("message %s %q, want %s %q", msg.Channel, msg.Payload, RevocationChannel, hash)
	}
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, CheckOnly: true}); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("after revocation: err = %v, want ErrInvalidKey", err)
	}
	// The rest of the record is kept.
	rec, err := rdb.HGetAll(ctx, keyRecordKey(hash)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if rec["status"] != "revoked" || rec["id"] != "key_r" || rec["user"] != "alice" {
		t.Fatalf("record after revocation = %v", rec)
	}
}

func TestCreditAndBalance(t *testing.T) {
	a, _ := newTestAccounts(t)
	ctx := t.Context()

	wantBalance(t, a, "nobody", 0, 0)

	bal, err := a.Credit(ctx, "alice", 12_500_000_000)
	if err != nil || bal != 12_500_000_000 {
		t.Fatalf("Credit = %d, %v; want 12500000000", bal, err)
	}
	bal, err = a.Credit(ctx, "alice", -2_500_000_001)
	if err != nil || bal != 9_999_999_999 {
		t.Fatalf("debit = %d, %v; want 9999999999", bal, err)
	}
	wantBalance(t, a, "alice", 9_999_999_999, 0)

	// Up to 2^53 - 1 nanos, the largest balance: kept exact.
	bal, err = a.Credit(ctx, "whale", money.MaxNanos)
	if err != nil || bal != money.MaxNanos {
		t.Fatalf("big credit = %d, %v; want %d", bal, err, money.MaxNanos)
	}
	wantBalance(t, a, "whale", money.MaxNanos, 0)

	// Accounts are separate.
	wantBalance(t, a, "bob", 0, 0)
}

func TestEnsureAccount(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	if err := a.EnsureAccount(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	got, err := rdb.HGetAll(ctx, acctKey("alice")).Result()
	if err != nil || got["balance"] != "0" || got["held"] != "0" {
		t.Fatalf("new account = %v, %v; want balance 0, held 0", got, err)
	}
	credit(t, a, "alice", 42)
	if err := a.EnsureAccount(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "alice", 42, 0)
}

func TestAuthorizeSettleConcurrent(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	hash := putActiveKey(t, a, "sk-ait-race", "key_race", "alice")

	const (
		hold    money.Nanos = 1_000_003
		fits                = 40
		callers             = 200
	)
	initial := fits*hold + hold - 1 // covers exactly 40 holds, not 41
	credit(t, a, "alice", initial)

	var (
		wg       sync.WaitGroup
		ok, quot atomic.Int64
		mu       sync.Mutex
		grants   []Grant
		errs     = make(chan error, callers)
		start    = make(chan struct{})
	)
	for i := range callers {
		wg.Go(func() {
			<-start
			g, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Model: "gpt-4o", Hold: hold,
				RequestID: "req_" + strconv.Itoa(i)})
			switch {
			case err == nil:
				ok.Add(1)
				mu.Lock()
				grants = append(grants, g)
				mu.Unlock()
			case errors.Is(err, ErrInsufficientQuota):
				quot.Add(1)
			default:
				errs <- err
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Authorize: %v", err)
	}
	if ok.Load() != fits || quot.Load() != callers-fits {
		t.Fatalf("%d admitted, %d refused; want %d and %d", ok.Load(), quot.Load(), fits, callers-fits)
	}
	wantBalance(t, a, "alice", initial, fits*hold)

	errs = make(chan error, len(grants))
	for _, g := range grants {
		wg.Go(func() {
			if _, err := settleBal(ctx, a, g, hold, []byte(`{"request_id":"`+g.RequestID+`"}`)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Settle: %v", err)
	}
	wantBalance(t, a, "alice", initial-fits*hold, 0)
	if zset, amts := holdIDs(t, rdb, "alice"); len(zset) != 0 || len(amts) != 0 {
		t.Fatalf("holds left: %v %v", zset, amts)
	}
	if n := streamLen(t, rdb); n != fits {
		t.Fatalf("stream length %d, want %d", n, fits)
	}
}

func BenchmarkAuthorizeSettle(b *testing.B) {
	a, _ := newTestAccounts(b)
	ctx := b.Context()
	hash := HashKey("sk-ait-bench")
	if err := a.PutKey(ctx, hash, KeyRecord{ID: "key_bench", User: "bench", Active: true,
		Models: []string{"gpt-4o", "deepseek-chat"}}); err != nil {
		b.Fatal(err)
	}
	if _, err := a.Credit(ctx, "bench", money.MaxNanos); err != nil {
		b.Fatal(err)
	}
	record := []byte(`{"request_id":"req_bench","time":"2025-01-01T00:00:00Z","user":"bench","key_id":"key_bench",` +
		`"model":"gpt-4o","endpoint":"/v1/chat/completions","stream":false,"status":200,"outcome":"completed",` +
		`"input_tokens":1200,"cached_input_tokens":0,"output_tokens":350,"reasoning_tokens":0,` +
		`"cost":"0.006500000","currency":"USD","estimated":false,"duration_ms":812,"ttft_ms":0,"client_ip":"127.0.0.1"}`)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		g, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Model: "gpt-4o", Hold: 10_000,
			RequestID: "req_" + strconv.Itoa(i)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := settleBal(ctx, a, g, 6_500, record); err != nil {
			b.Fatal(err)
		}
	}
}

// settleBal settles live and returns the balance after.
func settleBal(ctx context.Context, a *Accounts, g Grant, cost money.Nanos, record []byte) (money.Nanos, error) {
	if _, err := a.Settle(ctx, g, cost, 0, record, SettleLive); err != nil {
		return 0, err
	}
	bal, _, err := a.Balance(ctx, g.User)
	return bal, err
}

// sameGrant compares the identity and hold of two grants.
func sameGrant(a, b Grant) bool {
	return a.KeyID == b.KeyID && a.User == b.User && a.RequestID == b.RequestID && a.Hold == b.Hold
}

// TestAuthorizeHoldUpTo: a request that may cost more than its hold holds
// as much of the available balance as there is, up to what it can cost,
// so such requests cannot together overdraw the balance; settling releases
// exactly what each held.
func TestAuthorizeHoldUpTo(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	hash := putActiveKey(t, a, "sk-ait-upto", "key_u", "alice")
	credit(t, a, "alice", 1_000)

	auth := func(rid string, hold, upto money.Nanos) (Grant, error) {
		return a.Authorize(ctx, AuthRequest{KeyHash: hash, Model: "gpt-4o", Hold: hold, HoldUpTo: upto, RequestID: rid})
	}
	g1, err := auth("r1", 100, 600)
	if err != nil || g1.Hold != 600 {
		t.Fatalf("first: %+v, %v; want a hold of 600", g1, err)
	}
	g2, err := auth("r2", 100, 600)
	if err != nil || g2.Hold != 400 {
		t.Fatalf("second: %+v, %v; want the 400 left", g2, err)
	}
	wantBalance(t, a, "alice", 1_000, 1_000)
	if _, err := auth("r3", 100, 600); !errors.Is(err, ErrInsufficientQuota) {
		t.Fatalf("third: %v, want ErrInsufficientQuota", err)
	}
	if _, amts := holdIDs(t, rdb, "alice"); amts["r1"] != "600" || amts["r2"] != "400" {
		t.Fatalf("hold amounts %v", amts)
	}
	// A hold without HoldUpTo is its own amount.
	if _, err := settleBal(ctx, a, g2, 50, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, "alice", 950, 600)
	g4, err := auth("r4", 100, 0)
	if err != nil || g4.Hold != 100 {
		t.Fatalf("plain hold: %+v, %v", g4, err)
	}
	wantBalance(t, a, "alice", 950, 700)
	// Large amounts stay exact.
	credit(t, a, "bob", 9_000_000_000_000_000)
	hb := putActiveKey(t, a, "sk-ait-upto-b", "key_b", "bob")
	g5, err := a.Authorize(ctx, AuthRequest{KeyHash: hb, Hold: 1, HoldUpTo: 8_999_999_999_999_999, RequestID: "rb"})
	if err != nil || g5.Hold != 8_999_999_999_999_999 {
		t.Fatalf("large hold: %+v, %v", g5, err)
	}
	wantBalance(t, a, "bob", 9_000_000_000_000_000, 8_999_999_999_999_999)
}

// TestRenewHold: a renewed hold outlives its first deadline, so the
// authorize that releases expired holds leaves it alone; a settled hold
// is not brought back.
func TestRenewHold(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	a.HoldTTL = -time.Minute // every hold is past its deadline at once
	hash := putActiveKey(t, a, "sk-ait-renew", "key_r", "alice")
	credit(t, a, "alice", 1_000)
	g, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 600, RequestID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.RenewHold(ctx, "alice", "r1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Another request's authorize releases expired holds: r1 is not one.
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 500, RequestID: "r2"}); !errors.Is(err, ErrInsufficientQuota) {
		t.Fatalf("second hold: %v, want ErrInsufficientQuota (r1 still holds 600)", err)
	}
	if _, err := settleBal(ctx, a, g, 100, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := a.RenewHold(ctx, "alice", "r1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if zset, _ := holdIDs(t, rdb, "alice"); len(zset) != 0 {
		t.Fatalf("a settled hold came back: %v", zset)
	}
}
