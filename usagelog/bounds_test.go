package usagelog

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/filemode"
)

const units = money.Nanos(money.NanosPerUnit)

// Amounts are bounded before anything is written: a credit of 9,000,000,000
// is refused, and so is a second credit of 9,000,000 that would take the
// balance past MaxNanos (the range Redis compares exactly). Nothing of a
// refused entry reaches the ledger.
func TestLedgerEntryBounds(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	if _, err := s.CreateUser(ctx, User{ID: "u"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddLedgerEntry(ctx, "u", 9_000_000_000*units, "credit", "", ""); !errors.Is(err, money.ErrAmountRange) {
		t.Fatalf("credit of 9000000000: %v", err)
	}
	if _, err := s.AddLedgerEntry(ctx, "u", 9_000_000*units, "credit", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddLedgerEntry(ctx, "u", 9_000_000*units, "credit", "", ""); !errors.Is(err, money.ErrAmountRange) {
		t.Fatalf("second credit of 9000000: %v", err)
	}
	if n := countRows(t, s, "ledger"); n != 1 {
		t.Fatalf("ledger has %d entries, want 1", n)
	}
	// Spending frees room: the balance, not the credits, is bounded.
	r := rec("r1", "u", time.Now().UTC())
	r.Cost = 5_000_000 * units
	if _, err := s.InsertUsage(ctx, []Record{r}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddLedgerEntry(ctx, "u", money.MaxNanos-4_000_000*units, "credit", "", ""); err != nil {
		t.Fatalf("credit up to MaxNanos: %v", err)
	}
	if bal, err := s.LedgerBalance(ctx, "u"); err != nil || bal != money.MaxNanos {
		t.Fatalf("balance = %s, %v; want %s", bal, err, money.MaxNanos)
	}
	if _, err := s.AddLedgerEntry(ctx, "u", 1, "credit", "", ""); !errors.Is(err, money.ErrAmountRange) {
		t.Fatalf("credit past MaxNanos: %v", err)
	}
	// Debits are bounded the same way, below zero.
	if _, err := s.AddLedgerEntry(ctx, "u", -money.MaxNanos, "debit", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddLedgerEntry(ctx, "u", -money.MaxNanos, "debit", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddLedgerEntry(ctx, "u", -1, "debit", "", ""); !errors.Is(err, money.ErrAmountRange) {
		t.Fatalf("debit past -MaxNanos: %v", err)
	}
	if bal, _ := s.LedgerBalance(ctx, "u"); bal != -money.MaxNanos {
		t.Fatalf("balance = %s", bal)
	}
	// UndoLedgerEntry takes back an entry Redis refused.
	id, err := s.AddLedgerEntry(ctx, "u", 5, "credit", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.UndoLedgerEntry(ctx, "other", id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("undo of another user's entry: %v", err)
	}
	if err := s.UndoLedgerEntry(ctx, "u", id); err != nil {
		t.Fatal(err)
	}
	if bal, _ := s.LedgerBalance(ctx, "u"); bal != -money.MaxNanos {
		t.Fatalf("balance after undo = %s", bal)
	}
}

// A usage row must carry a cost some settlement could have debited.
func TestUsageCostBounds(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	for _, cost := range []money.Nanos{-1, money.MaxNanos + 1, 9_000_000_000 * units} {
		r := rec("r", "u", time.Now().UTC())
		r.Cost = cost
		if _, err := s.InsertUsage(ctx, []Record{r}); !errors.Is(err, ErrInvalid) {
			t.Errorf("cost %d: %v", cost, err)
		}
	}
	if n := countRows(t, s, "usage"); n != 0 {
		t.Fatalf("%d rows stored", n)
	}
}

// An erased user's account is closed: no credit, no debit.
func TestErasedUserTakesNoLedgerEntry(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	if _, err := s.CreateUser(ctx, User{ID: "gone", Email: "g@example.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddLedgerEntry(ctx, "gone", 5*units, "credit", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EraseUser(ctx, "gone", time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, amt := range []money.Nanos{5 * units, -units} {
		if _, err := s.AddLedgerEntry(ctx, "gone", amt, "credit", "", ""); !errors.Is(err, ErrUserDeleted) {
			t.Errorf("entry of %s for an erased user: %v", amt, err)
		}
	}
	if n := countRows(t, s, "ledger"); n != 1 {
		t.Fatalf("ledger has %d entries, want 1", n)
	}
	if _, err := s.AddLedgerEntry(ctx, "nobody", units, "credit", "", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown user: %v", err)
	}
}

// Rows stored before amounts were bounded (the two credits of 9,000,000,000
// that overflowed SQLite's SUM) never stop the balance, the seed, an export,
// a summary or the credited total: sums are exact whatever the rows hold,
// and a balance out of range is reported clamped, with its exact value.
func TestSumsNeverOverflow(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	for _, id := range []string{"whale", "debtor", "ok"} {
		if _, err := s.CreateUser(ctx, User{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	legacy := func(user string, amount int64) {
		t.Helper()
		if _, err := s.wr.ExecContext(ctx, `INSERT INTO ledger (user_id, amount, kind, created_at) VALUES (?, ?, 'credit', 0)`,
			user, amount); err != nil {
			t.Fatal(err)
		}
	}
	legacyUsage := func(id, user string, cost int64) {
		t.Helper()
		if _, err := s.wr.ExecContext(ctx, `INSERT INTO usage (request_id, time, user_id, cost) VALUES (?, ?, ?, ?)`,
			id, time.Now().UnixNano(), user, cost); err != nil {
			t.Fatal(err)
		}
	}
	nine := int64(9_000_000_000 * units)
	legacy("whale", nine)
	legacy("whale", nine)
	legacy("whale", 1<<63-1)
	legacyUsage("w1", "whale", 1)
	legacy("debtor", 5)
	legacyUsage("d1", "debtor", nine)
	legacyUsage("d2", "debtor", nine)
	legacyUsage("d3", "debtor", -1<<63)
	legacy("ok", int64(10*units))
	legacyUsage("o1", "ok", int64(3*units))
	legacyUsage("x1", "unknown", 1<<62) // in the summary: its total is past int64

	wantWhale := "27223372036.854775806" // 2·9e18 + (2^63-1) - 1 nanos
	a, err := s.LedgerAmount(ctx, "whale")
	if err != nil || a.Nanos != money.MaxNanos || a.Exact != wantWhale || !a.OutOfRange() {
		t.Fatalf("whale: %+v, %v", a, err)
	}
	// 5 - 2·9e18 + 2^63 nanos
	if a, err := s.LedgerAmount(ctx, "debtor"); err != nil || a.Nanos != -money.MaxNanos || a.Exact != "-8776627963.145224187" {
		t.Fatalf("debtor: %+v, %v", a, err)
	}
	if a, err := s.LedgerAmount(ctx, "ok"); err != nil || a.Nanos != 7*units || a.OutOfRange() {
		t.Fatalf("ok: %+v, %v", a, err)
	}
	all, err := s.AccountBalances(ctx)
	if err != nil || len(all) != 3 || all[2].User != "whale" || all[2].Balance.Exact != wantWhale {
		t.Fatalf("AccountBalances = %+v, %v", all, err)
	}
	bals, err := s.Balances(ctx)
	if err != nil || bals["whale"] != money.MaxNanos || bals["debtor"] != -money.MaxNanos || bals["ok"] != 7*units {
		t.Fatalf("Balances = %v, %v", bals, err)
	}
	var buf bytes.Buffer
	if err := s.ExportUser(ctx, "whale", time.Now(), &buf); err != nil {
		t.Fatalf("export: %v", err)
	}
	var doc struct {
		Balance money.Nanos `json:"ledger_balance"`
		Exact   string      `json:"ledger_balance_exact"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil || doc.Balance != money.MaxNanos || doc.Exact != wantWhale {
		t.Fatalf("export: %+v, %v\n%s", doc, err, buf.Bytes())
	}
	buf.Reset()
	if err := s.ExportUser(ctx, "ok", time.Now(), &buf); err != nil || strings.Contains(buf.String(), "ledger_balance_exact") {
		t.Fatalf("export of an in-range balance: %v\n%s", err, buf.Bytes())
	}
	if _, total, err := s.SummarizeUsage(ctx, SummaryQuery{}); err != nil || total.Cost != 1<<63-1 {
		t.Fatalf("summary: %+v, %v", total, err)
	}
	if groups, _, err := s.SummarizeUsage(ctx, SummaryQuery{GroupBy: GroupByDay}); err != nil || len(groups) != 1 {
		t.Fatalf("summary by day: %+v, %v", groups, err)
	}
	if n, err := s.CreditedTotal(ctx, "whale"); err != nil || n != 1<<63-1 {
		t.Fatalf("credited total = %d, %v", n, err)
	}
	// An out-of-range balance may be brought back, never pushed further.
	if _, err := s.AddLedgerEntry(ctx, "whale", 1, "credit", "", ""); !errors.Is(err, money.ErrAmountRange) {
		t.Fatalf("credit to an out-of-range balance: %v", err)
	}
	if _, err := s.AddLedgerEntry(ctx, "whale", -money.MaxNanos, "debit", "repair", ""); err != nil {
		t.Fatalf("debit of an out-of-range balance: %v", err)
	}
}

func TestDifferenceExact(t *testing.T) {
	for _, tc := range []struct {
		plus, minus wide
		nanos       money.Nanos
		exact       string
	}{
		{wide{0, 0}, wide{0, 0}, 0, ""},
		{wide{1, 5}, wide{0, 3}, 1<<31 + 2, ""},
		{wide{-3, -7}, wide{0, 0}, -3<<31 - 7, ""},
		{wide{1 << 22, 0}, wide{0, 1}, money.MaxNanos, ""},
		{wide{1 << 22, 0}, wide{0, 0}, money.MaxNanos, "9007199.254740992"},
		{wide{-1 << 22, 0}, wide{0, 0}, -money.MaxNanos, "-9007199.254740992"},
		{wide{0, 1}, wide{1 << 40, 0}, -money.MaxNanos, "-2361183241434.822606847"},
		{wide{1<<62 + 3, 1<<62 + 1}, wide{-1 << 62, -1 << 62}, money.MaxNanos, "19807040637789456441.683214337"},
		{wide{0, 7}, wide{0, 0}, 7, ""},
	} {
		got := difference(tc.plus, tc.minus)
		if got.Nanos != tc.nanos || got.Exact != tc.exact {
			t.Errorf("difference(%v, %v) = %+v; want %d %q", tc.plus, tc.minus, got, tc.nanos, tc.exact)
		}
	}
}

// The ledger holds personal data and money: its file, SQLite's -wal and
// -shm beside it and the folders Open creates are the owner's only, and a
// file left with a wider mode is tightened. A folder the operator made is
// left as it is.
func TestLedgerFileModes(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	root := t.TempDir()
	path := filepath.Join(root, "new", "deeper", "ledger.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser(context.Background(), User{ID: "u"}); err != nil {
		t.Fatal(err)
	}
	filemode.Want(t, filepath.Join(root, "new"), 0o700)
	filemode.Want(t, filepath.Join(root, "new", "deeper"), 0o700)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		filemode.Want(t, p, 0o600)
	}
	s.Close()

	// Files left wide (by an older build, a restore, a copy) are tightened;
	// the operator's own folder keeps its mode.
	dir := filepath.Join(root, "operator")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "ledger.db")
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.WriteFile(p, nil, 0o644); err != nil && !errors.Is(err, os.ErrExist) {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o664); err != nil {
			t.Fatal(err)
		}
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	filemode.Want(t, dir, 0o755)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		filemode.Want(t, p, 0o600)
	}
}

// usage_clamped: set by the gateway on a row whose usage report claimed
// more than the request could produce; carried through the stream, stored,
// and returned by queries and exports. Rows from before it read false.
func TestUsageClamped(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	// A ledger at schema version 3 with one usage row.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`}
	stmts = append(stmts, migrations[:3]...)
	stmts = append(stmts, `INSERT INTO schema_migrations VALUES (1, 0), (2, 0), (3, 0)`,
		`INSERT INTO users (id, created_at) VALUES ('u', 0)`,
		`INSERT INTO usage (request_id, time, user_id) VALUES ('old', 1, 'u')`)
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	rdb, _ := startRedis(t)
	clamped := rec("clamped", "u", time.Now().UTC())
	clamped.Clamped = true
	plain := rec("plain", "u", time.Now().UTC().Add(time.Millisecond))
	// As the gateway writes them: AppendJSON.
	for _, r := range []Record{clamped, plain} {
		b, err := r.AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(b, []byte(`"usage_clamped":true`)); got != r.Clamped {
			t.Fatalf("%s: %s", r.RequestID, b)
		}
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: testStream, Values: []any{testField, b}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	f := NewFlusher(rdb, s, FlusherConfig{Streams: []string{testStream}, Field: testField, Group: "g", Consumer: "c"}, nil)
	if n, err := f.FlushNow(ctx); err != nil || n != 2 {
		t.Fatalf("FlushNow = %d, %v", n, err)
	}
	var n int
	if err := s.rd.QueryRow(`SELECT COUNT(*) FROM usage WHERE usage_clamped = 1`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("clamped rows = %d, %v", n, err)
	}
	recs, err := s.ListUsage(ctx, UsageQuery{User: "u"})
	if err != nil || len(recs) != 3 {
		t.Fatalf("ListUsage = %d, %v", len(recs), err)
	}
	for _, r := range recs {
		if r.Clamped != (r.RequestID == "clamped") {
			t.Errorf("%s: Clamped = %v", r.RequestID, r.Clamped)
		}
	}
	var buf bytes.Buffer
	if err := s.ExportUser(ctx, "u", time.Now(), &buf); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Usage []Record `json:"usage"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil || len(doc.Usage) != 3 {
		t.Fatalf("export: %v\n%s", err, buf.Bytes())
	}
	if c := bytes.Count(buf.Bytes(), []byte(`"usage_clamped":true`)); c != 1 {
		t.Fatalf("export has %d clamped rows:\n%s", c, buf.Bytes())
	}
}
