package billing

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Redis written by the first layout (keys tagged with the user ID, one
// usage stream) is moved, TTLs and pending records included, and then
// works as if it had always been in this one.
func TestMigrateLayoutMovesEverything(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	old := func(user, suffix string) string { return "ait:{" + user + "}:" + suffix }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(rdb.HSet(ctx, old("alice", "acct"), "balance", 500, "held", 100).Err())
	must(rdb.ZAdd(ctx, old("alice", "holds"), redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: "req_a"}).Err())
	must(rdb.HSet(ctx, old("alice", "holdamt"), "req_a", 100).Err())
	must(rdb.HSet(ctx, old("alice", "lseq:n1.1"), "wm", 3).Err())
	must(rdb.PExpire(ctx, old("alice", "lseq:n1.1"), time.Hour).Err())
	must(rdb.Set(ctx, old("bob.x", "replayed:req_9"), 1, time.Hour).Err())
	must(rdb.HSet(ctx, old("bob.x", "acct"), "balance", 7, "held", 0).Err())
	hash := HashKey("sk-ait-migrated")
	must(a.PutKey(ctx, hash, KeyRecord{ID: "key_a", User: "alice", Active: true}))
	must(a.MarkSeeded(ctx))
	for _, r := range []string{`{"request_id":"req_1","user":"alice"}`, `{"request_id":"req_2","user":"bob.x"}`, `not json`} {
		must(rdb.XAdd(ctx, &redis.XAddArgs{Stream: legacyUsageStream, Values: []any{UsageField, r}}).Err())
	}
	// The old ledger group had read one entry without acknowledging it.
	must(rdb.XGroupCreate(ctx, legacyUsageStream, "ledger", "0").Err())
	must(rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "ledger", Consumer: "c", Streams: []string{legacyUsageStream, ">"}, Count: 1}).Err())

	m, err := a.MigrateLayout(ctx)
	if err != nil || m.Keys != 6 || m.Records != 3 || len(m.Conflicts) != 0 {
		t.Fatalf("MigrateLayout = %+v, %v; want 6 keys and 3 records moved", m, err)
	}
	if n, _ := rdb.Exists(ctx, old("alice", "acct"), old("alice", "holds"), old("bob.x", "acct"), legacyUsageStream).Result(); n != 0 {
		t.Fatalf("%d old keys left", n)
	}
	wantBalance(t, a, "alice", 500, 100)
	wantBalance(t, a, "bob.x", 7, 0)
	for _, k := range []string{AccountKey("alice", "lseq:n1.1"), replayKey("bob.x", "req_9")} {
		if ttl, err := rdb.PTTL(ctx, k).Result(); err != nil || ttl <= 0 || ttl > time.Hour {
			t.Errorf("%s: TTL %s, %v; want the old one kept", k, ttl, err)
		}
	}
	streamHas := func(stream, want string) {
		t.Helper()
		msgs, err := rdb.XRange(ctx, stream, "-", "+").Result()
		if err != nil || !slices.ContainsFunc(msgs, func(m redis.XMessage) bool { return m.Values[UsageField] == want }) {
			t.Errorf("%s = %v, %v; want it to hold %s", stream, msgs, err, want)
		}
	}
	streamHas(UsageStreamOf("alice"), `{"request_id":"req_1","user":"alice"}`)
	streamHas(UsageStreamOf("bob.x"), `{"request_id":"req_2","user":"bob.x"}`)
	streamHas(UsageStreams[0], `not json`)

	// The moved hold settles as before, with its record in alice's shard.
	g := Grant{User: "alice", KeyID: "key_a", RequestID: "req_a"}
	if ok, err := a.Settle(ctx, g, 40, 0, []byte(`{"request_id":"req_a","user":"alice"}`), SettleReplay); err != nil || !ok {
		t.Fatalf("settling the moved hold: %v, %v", ok, err)
	}
	wantBalance(t, a, "alice", 460, 0)
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, Hold: 10, RequestID: "req_b"}); err != nil {
		t.Fatalf("Authorize after the move: %v", err)
	}

	// Done once: the next call reads the version and moves nothing; with
	// the version lost, a second pass finds nothing to move.
	if m, err := a.MigrateLayout(ctx); err != nil || m.Keys != 0 || m.Records != 0 {
		t.Fatalf("second MigrateLayout = %+v, %v", m, err)
	}
	must(rdb.Del(ctx, layoutKey).Err())
	if m, err := a.MigrateLayout(ctx); err != nil || m.Keys != 0 || m.Records != 0 {
		t.Fatalf("MigrateLayout without the version = %+v, %v", m, err)
	}
	if v, _ := rdb.Get(ctx, layoutKey).Result(); v != layoutVersion {
		t.Fatalf("layout version %q", v)
	}
}

// An old key whose new name is taken is left in place and reported, not
// written over.
func TestMigrateLayoutReportsConflicts(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	if err := rdb.HSet(ctx, "ait:{carol}:acct", "balance", 1, "held", 0).Err(); err != nil {
		t.Fatal(err)
	}
	credit(t, a, "carol", 5)
	m, err := a.MigrateLayout(ctx)
	if err != nil || m.Keys != 0 || !slices.Equal(m.Conflicts, []string{"ait:{carol}:acct"}) {
		t.Fatalf("MigrateLayout = %+v, %v; want the conflict reported", m, err)
	}
	wantBalance(t, a, "carol", 5, 0)
	if n, _ := rdb.Exists(ctx, "ait:{carol}:acct").Result(); n != 1 {
		t.Fatal("the conflicting old key was removed")
	}
}

func TestLegacyAccountKey(t *testing.T) {
	for key, want := range map[string]string{
		"ait:{bob}:acct":           "bob acct",
		"ait:{b.o-b_1}:rl:k:1:r":   "b.o-b_1 rl:k:1:r",
		AccountKey("bob", "acct"):  "",
		"ait:{}:acct":              "",
		"ait:{bob}":                "",
		"ait:{bob}:":               "",
		"ait:key:abc":              "",
		"ait:dash_session:{x}:y":   "",
		"ait:{#12}:usage":          "",
		"ait:{bob}}:acct":          "",
		"ait:{bob:acct":            "",
		"xait:{bob}:acct":          "",
		"ait:{bob}:dash_sessions":  "bob dash_sessions",
		"ait:{bob}:topups:account": "bob topups:account",
	} {
		user, suffix, ok := legacyAccountKey(key)
		got := ""
		if ok {
			got = user + " " + suffix
		}
		if got != want {
			t.Errorf("legacyAccountKey(%q) = %q; want %q", key, got, want)
		}
	}
}

// Records a node of the earlier version writes to the old stream after the
// move are moved too, on the next call; a layout newer than this build's is
// refused and left alone.
func TestMigrateLayoutLaterRecordsAndNewerLayout(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	if _, err := a.MigrateLayout(ctx); err != nil {
		t.Fatal(err)
	}
	rec := `{"request_id":"req_late","user":"alice"}`
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: legacyUsageStream, Values: []any{UsageField, rec}}).Err(); err != nil {
		t.Fatal(err)
	}
	if m, err := a.MigrateLayout(ctx); err != nil || m.Records != 1 {
		t.Fatalf("MigrateLayout on layout 2 with a late record = %+v, %v; want it moved", m, err)
	}
	if msgs, _ := rdb.XRange(ctx, UsageStreamOf("alice"), "-", "+").Result(); len(msgs) != 1 || msgs[0].Values[UsageField] != rec {
		t.Fatalf("alice's stream = %v", msgs)
	}
	if n, _ := a.MoveLegacyUsage(ctx); n != 0 {
		t.Fatalf("moved %d with nothing left", n)
	}

	if err := rdb.Set(ctx, layoutKey, "3", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.MigrateLayout(ctx); !errors.Is(err, ErrNewerLayout) {
		t.Fatalf("MigrateLayout on layout 3: %v; want ErrNewerLayout", err)
	}
	if v, _ := rdb.Get(ctx, layoutKey).Result(); v != "3" {
		t.Fatalf("layout version overwritten with %q", v)
	}
}

// A Redis out of memory (noeviction) refuses the copies: the move fails and
// every record stays where it was, to be moved once there is room.
func TestMigrateLayoutOutOfMemoryLosesNothing(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	for i := range 10 {
		r := fmt.Sprintf(`{"request_id":"req_%d","user":"u%d"}`, i, i)
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: legacyUsageStream, Values: []any{UsageField, r}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.MigrateLayout(ctx); err == nil {
		t.Fatal("MigrateLayout succeeded on a Redis refusing writes")
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.XLen(ctx, legacyUsageStream).Result(); n != 10 {
		t.Fatalf("old stream holds %d of 10 records after the refused move", n)
	}
	if m, err := a.MigrateLayout(ctx); err != nil || m.Records != 10 {
		t.Fatalf("MigrateLayout with room = %+v, %v", m, err)
	}
	if n, _ := UsageBacklog(ctx, rdb); n != 10 {
		t.Fatalf("shard streams hold %d records; want 10", n)
	}
}
