package usagelog

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

func TestOpenMigratesOnceAndReopens(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser(ctx, User{ID: "u1", Email: "a@example.com"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for i := 0; i < 2; i++ {
		s, err = Open(path)
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		if n := countRows(t, s, "schema_migrations"); n != len(migrations) {
			t.Errorf("schema_migrations has %d rows, want %d", n, len(migrations))
		}
		if u, err := s.GetUser(ctx, "u1"); err != nil || u.Email != "a@example.com" {
			t.Errorf("user after reopen: %+v, %v", u, err)
		}
		var mode string
		if err := s.rd.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
			t.Errorf("journal_mode = %q, %v; want wal", mode, err)
		}
		s.Close()
	}

	// A database migrated by a newer build is refused, not mangled.
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.wr.Exec("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)", len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("open of newer schema: %v, want an error", err)
	}
}

func TestOpenRefusesNonFile(t *testing.T) {
	for _, p := range []string{"", ":memory:", "x.db?mode=ro"} {
		if _, err := Open(p); !errors.Is(err, ErrInvalid) {
			t.Errorf("Open(%q) = %v, want ErrInvalid", p, err)
		}
	}
}

func TestReadsDoNotWaitForWriter(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	if _, err := s.CreateUser(ctx, User{ID: "u1"}); err != nil {
		t.Fatal(err)
	}
	// Hold the only writer connection inside an open write transaction.
	tx, err := s.wr.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec("INSERT INTO users (id, created_at) VALUES ('u2', 0)"); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.GetUser(rctx, "u1"); err != nil {
		t.Fatalf("read during write: %v", err)
	}
	if _, err := s.GetUser(rctx, "u2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("uncommitted row visible to readers: %v", err)
	}
	if _, err := s.rd.Exec("DELETE FROM users"); err == nil {
		t.Fatal("read pool accepted a write")
	}
}

func TestUsers(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)

	u, err := s.CreateUser(ctx, User{Email: "a@example.com", Name: "Ann"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u.ID, "u_") || len(u.ID) != 18 || u.Status != UserActive || u.CreatedAt.IsZero() {
		t.Errorf("created user = %+v", u)
	}
	got, err := s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got != u {
		t.Errorf("GetUser = %+v, want %+v", got, u)
	}
	b, _ := json.Marshal(got)
	for _, f := range []string{`"id":`, `"email":`, `"name":`, `"status":"active"`, `"created_at":`} {
		if !strings.Contains(string(b), f) {
			t.Errorf("user JSON %s lacks %s", b, f)
		}
	}

	if _, err := s.CreateUser(ctx, User{ID: u.ID}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate id: %v, want ErrExists", err)
	}
	if _, err := s.CreateUser(ctx, User{Status: "banned"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad status: %v, want ErrInvalid", err)
	}
	if _, err := s.GetUser(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing user: %v, want ErrNotFound", err)
	}
}

func TestLedger(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	if _, err := s.CreateUser(ctx, User{ID: "u1"}); err != nil {
		t.Fatal(err)
	}
	ten, _ := money.ParseNanos("10")
	debit, _ := money.ParseNanos("-2.5")

	id1, err := s.AddLedgerEntry(ctx, "u1", ten, "stripe", "top-up", "evt_1")
	if err != nil {
		t.Fatal(err)
	}
	id2, err := s.AddLedgerEntry(ctx, "u1", debit, "admin", "correction", "")
	if err != nil {
		t.Fatal(err)
	}
	if id2 <= id1 {
		t.Errorf("ledger ids %d then %d", id1, id2)
	}
	// "" is no ref: any number of entries may have none.
	if _, err := s.AddLedgerEntry(ctx, "u1", debit, "admin", "again", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddLedgerEntry(ctx, "u1", ten, "stripe", "replay", "evt_1"); !errors.Is(err, ErrExists) {
		t.Errorf("reused ref: %v, want ErrExists", err)
	}
	if _, err := s.AddLedgerEntry(ctx, "nobody", ten, "admin", "", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown user: %v, want ErrNotFound", err)
	}
	if _, err := s.AddLedgerEntry(ctx, "u1", 0, "admin", "", ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("zero amount: %v, want ErrInvalid", err)
	}
	if _, err := s.AddLedgerEntry(ctx, "u1", ten, "", "", ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty kind: %v, want ErrInvalid", err)
	}

	r := rec("req-1", "u1", time.Now())
	r.Cost, _ = money.ParseNanos("1.25")
	other := rec("req-2", "u2", time.Now()) // another user's usage does not count
	if _, err := s.InsertUsage(ctx, []Record{r, other}); err != nil {
		t.Fatal(err)
	}
	bal, err := s.LedgerBalance(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := money.ParseNanos("3.75"); bal != want { // 10 - 2.5 - 2.5 - 1.25
		t.Errorf("balance = %s, want %s", bal, want)
	}
	if _, err := s.LedgerBalance(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("balance of unknown user: %v, want ErrNotFound", err)
	}
	if _, err := s.CreateUser(ctx, User{ID: "u3"}); err != nil {
		t.Fatal(err)
	}
	if bal, err := s.LedgerBalance(ctx, "u3"); err != nil || bal != 0 {
		t.Errorf("balance of new user = %s, %v", bal, err)
	}
}

func TestKeys(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	if _, err := s.CreateUser(ctx, User{ID: "u1"}); err != nil {
		t.Fatal(err)
	}
	exp := time.Date(2099, 1, 2, 3, 4, 5, 6, time.UTC)
	k := Key{
		ID: "k1", UserID: "u1", Name: "laptop", Hash: strings.Repeat("ab", 32), Prefix: "sk-abc",
		Models: []string{"deepseek-v4-flash", "gpt-4o*"}, RPM: 60, TPM: 100000,
		AllowedIPs: []string{"10.0.0.0/8"}, ExpiresAt: &exp,
	}
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetKey(ctx, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash != k.Hash || got.Status != KeyActive || got.CreatedAt.IsZero() || got.RevokedAt != nil ||
		got.ExpiresAt == nil || !got.ExpiresAt.Equal(exp) || len(got.Models) != 2 || got.Models[1] != "gpt-4o*" ||
		got.AllowedIPs[0] != "10.0.0.0/8" || got.RPM != 60 || got.TPM != 100000 || got.Prefix != "sk-abc" {
		t.Errorf("GetKey = %+v", got)
	}
	b, _ := json.Marshal(got)
	if strings.Contains(string(b), k.Hash) || strings.Contains(string(b), `"hash"`) {
		t.Errorf("key JSON leaks the hash: %s", b)
	}
	for _, f := range []string{`"user":"u1"`, `"allowed_ips":`, `"expires_at":`, `"created_at":`, `"rpm":60`} {
		if !strings.Contains(string(b), f) {
			t.Errorf("key JSON %s lacks %s", b, f)
		}
	}

	for name, tc := range map[string]struct {
		k    Key
		want error
	}{
		"duplicate id":   {Key{ID: "k1", UserID: "u1", Hash: "other"}, ErrExists},
		"duplicate hash": {Key{ID: "k9", UserID: "u1", Hash: k.Hash}, ErrExists},
		"unknown user":   {Key{ID: "k9", UserID: "nobody", Hash: "h9"}, ErrNotFound},
		"no hash":        {Key{ID: "k9", UserID: "u1"}, ErrInvalid},
		"no id":          {Key{UserID: "u1", Hash: "h9"}, ErrInvalid},
	} {
		if err := s.CreateKey(ctx, tc.k); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	if _, err := s.GetKey(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing key: %v, want ErrNotFound", err)
	}

	past := time.Now().Add(-time.Hour)
	for _, extra := range []Key{
		{ID: "k2", UserID: "u1", Hash: "h2"},
		{ID: "k3", UserID: "u1", Hash: "h3", ExpiresAt: &past},
	} {
		if err := s.CreateKey(ctx, extra); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := s.ListKeys(ctx, "u1")
	if err != nil || len(keys) != 3 {
		t.Fatalf("ListKeys = %d keys, %v", len(keys), err)
	}
	if keys[1].Models != nil || keys[1].AllowedIPs != nil {
		t.Errorf("empty lists should read back nil: %+v", keys[1])
	}
	if keys, err := s.ListKeys(ctx, "nobody"); err != nil || keys != nil {
		t.Errorf("ListKeys(nobody) = %v, %v", keys, err)
	}

	at := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	rk, err := s.RevokeKey(ctx, "k2", at)
	if err != nil || rk.Status != KeyRevoked || rk.RevokedAt == nil || !rk.RevokedAt.Equal(at) {
		t.Fatalf("RevokeKey = %+v, %v", rk, err)
	}
	rk, err = s.RevokeKey(ctx, "k2", at.Add(time.Hour))
	if err != nil || !rk.RevokedAt.Equal(at) {
		t.Errorf("second revoke changed the key: %+v, %v", rk, err)
	}
	if _, err := s.RevokeKey(ctx, "nope", at); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke missing key: %v, want ErrNotFound", err)
	}

	active, err := s.ActiveKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 1 || active[0].ID != "k1" || active[0].Hash != k.Hash {
		t.Errorf("ActiveKeys = %+v, want only k1 (k2 revoked, k3 expired)", active)
	}

	// A deleted user gets no new keys.
	if _, err := s.CreateUser(ctx, User{ID: "gone", Status: UserDeleted}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, Key{ID: "k8", UserID: "gone", Hash: "h8"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("key for deleted user: %v, want ErrNotFound", err)
	}
}

// The writer runs with the page cache and checkpoint interval the usage
// inserts are sized for (writerPragmas); readers keep SQLite's defaults.
func TestWriterPragmas(t *testing.T) {
	s := openStore(t)
	for _, c := range []struct {
		pragma string
		want   int64
	}{{"cache_size", -16384}, {"wal_autocheckpoint", 10000}} {
		var got int64
		if err := s.wr.QueryRow("PRAGMA " + c.pragma).Scan(&got); err != nil || got != c.want {
			t.Errorf("writer: PRAGMA %s = %d, %v; want %d", c.pragma, got, err, c.want)
		}
	}
	var cache int64
	if err := s.rd.QueryRow("PRAGMA cache_size").Scan(&cache); err != nil || cache == -16384 {
		t.Errorf("reader: PRAGMA cache_size = %d, %v; want the default", cache, err)
	}
}
