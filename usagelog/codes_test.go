package usagelog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// mintOne stores one code of amount with the given secret and returns it.
func mintOne(t *testing.T, s *Store, id, secret string, amount money.Nanos, expires *time.Time) Code {
	t.Helper()
	codes := []Code{{ID: id, Hash: hashOf(secret), Amount: amount, Note: "batch 1", ExpiresAt: expires}}
	if err := s.CreateCodes(context.Background(), codes, time.Now()); err != nil {
		t.Fatal(err)
	}
	return codes[0]
}

// hashOf is billing.HashKey (usagelog does not import billing).
func hashOf(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// A code redeems once: the code and a pending ledger entry are written
// together; a second redeem, a void code and an expired one are refused
// and write nothing.
func TestRedeemCodeOnce(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	for _, u := range []string{"u1", "u2"} {
		if _, err := s.CreateUser(ctx, User{ID: u}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	mintOne(t, s, "c1", "aitc-one", 10*money.NanosPerUnit, nil)
	c, e, err := s.RedeemCode(ctx, hashOf("aitc-one"), "u1", now)
	if err != nil || c.Status != CodeRedeemed || c.RedeemedBy != "u1" || e.Amount != 10*money.NanosPerUnit || e.Ref != "code:c1" {
		t.Fatalf("redeem: %+v %+v %v", c, e, err)
	}
	pending, err := s.PendingCredits(ctx, 0)
	if err != nil || len(pending) != 1 || pending[0].ID != e.ID {
		t.Fatalf("pending after redeem: %+v %v", pending, err)
	}
	for _, u := range []string{"u1", "u2"} {
		if _, _, err := s.RedeemCode(ctx, hashOf("aitc-one"), u, now); !errors.Is(err, ErrCodeRedeemed) {
			t.Fatalf("second redeem by %s: %v", u, err)
		}
	}
	if _, _, err := s.RedeemCode(ctx, hashOf("aitc-none"), "u1", now); !errors.Is(err, ErrCodeUnknown) {
		t.Fatalf("unknown code: %v", err)
	}
	mintOne(t, s, "c2", "aitc-two", money.NanosPerUnit, nil)
	if v, err := s.VoidCode(ctx, "c2", now); err != nil || v.Status != CodeVoid || v.VoidedAt == nil {
		t.Fatalf("void: %+v %v", v, err)
	}
	if _, _, err := s.RedeemCode(ctx, hashOf("aitc-two"), "u1", now); !errors.Is(err, ErrCodeVoid) {
		t.Fatalf("void code: %v", err)
	}
	if _, err := s.VoidCode(ctx, "c1", now); !errors.Is(err, ErrCodeRedeemed) {
		t.Fatalf("void of a redeemed code: %v", err)
	}
	if _, err := s.VoidCode(ctx, "nope", now); !errors.Is(err, ErrNotFound) {
		t.Fatalf("void of an unknown code: %v", err)
	}
	past := now.Add(-time.Minute)
	mintOne(t, s, "c3", "aitc-three", money.NanosPerUnit, &past)
	if _, _, err := s.RedeemCode(ctx, hashOf("aitc-three"), "u1", now); !errors.Is(err, ErrCodeExpired) {
		t.Fatalf("expired code: %v", err)
	}
	if bal, err := s.LedgerBalance(ctx, "u1"); err != nil || bal != 10*money.NanosPerUnit {
		t.Fatalf("ledger balance %s %v, want 10", bal, err)
	}
	for status, want := range map[string][]string{"": {"c3", "c2", "c1"}, CodeExpired: {"c3"}, CodeVoid: {"c2"},
		CodeRedeemed: {"c1"}, CodeUnused: nil} {
		got, err := s.ListCodes(ctx, CodeQuery{Status: status})
		var ids []string
		for _, c := range got {
			ids = append(ids, c.ID)
		}
		if err != nil || len(ids) != len(want) || len(want) > 0 && ids[0] != want[0] {
			t.Errorf("status %q: %v %v, want %v", status, ids, err, want)
		}
	}
	page, err := s.ListCodes(ctx, CodeQuery{Limit: 2})
	if err != nil || len(page) != 2 {
		t.Fatal(page, err)
	}
	rest, err := s.ListCodes(ctx, CodeQuery{After: page[1].ID})
	if err != nil || len(rest) != 1 || rest[0].ID == page[0].ID || rest[0].ID == page[1].ID {
		t.Fatalf("second page %v %v", rest, err)
	}
}

// A code's credit takes the ledger balance no further than the range, and
// an erased user cannot redeem: both leave the code unused.
func TestRedeemCodeRefusals(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	for _, u := range []string{"rich", "gone"} {
		if _, err := s.CreateUser(ctx, User{ID: u}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AddLedgerEntry(ctx, "rich", money.MaxNanos, "credit", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EraseUser(ctx, "gone", time.Now()); err != nil {
		t.Fatal(err)
	}
	mintOne(t, s, "c1", "aitc-x", money.NanosPerUnit, nil)
	if _, _, err := s.RedeemCode(ctx, hashOf("aitc-x"), "rich", time.Now()); !errors.Is(err, money.ErrAmountRange) {
		t.Fatalf("over the range: %v", err)
	}
	if _, _, err := s.RedeemCode(ctx, hashOf("aitc-x"), "gone", time.Now()); !errors.Is(err, ErrUserDeleted) {
		t.Fatalf("erased user: %v", err)
	}
	if _, _, err := s.RedeemCode(ctx, hashOf("aitc-x"), "nobody", time.Now()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
	if c, err := s.GetCode(ctx, "c1"); err != nil || c.Status != CodeUnused || c.RedeemedBy != "" {
		t.Fatalf("code after refusals: %+v %v", c, err)
	}
	for _, bad := range [][]Code{
		{{ID: "z", Hash: "h", Amount: 0}},
		{{ID: "z", Hash: "h", Amount: money.MaxNanos + 1}},
		{{ID: "", Hash: "h", Amount: 1}},
	} {
		if err := s.CreateCodes(ctx, bad, time.Now()); err == nil {
			t.Errorf("minted %+v", bad)
		}
	}
	if err := s.CreateCodes(ctx, []Code{{ID: "d1", Hash: "hd", Amount: 1}, {ID: "d2", Hash: "hd", Amount: 1}}, time.Now()); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate hash: %v", err)
	}
	if _, err := s.GetCode(ctx, "d1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused batch left a code: %v", err)
	}
}

// Many redeems of one code at once by two users: exactly one succeeds and
// one ledger entry exists.
func TestRedeemCodeConcurrent(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	for _, u := range []string{"a", "b"} {
		if _, err := s.CreateUser(ctx, User{ID: u}); err != nil {
			t.Fatal(err)
		}
	}
	mintOne(t, s, "c", "aitc-race", 3*money.NanosPerUnit, nil)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok, lost int
	)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := s.RedeemCode(ctx, hashOf("aitc-race"), []string{"a", "b"}[i%2], time.Now())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrCodeRedeemed):
				lost++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok != 1 || lost != 19 {
		t.Fatalf("%d redeemed, %d refused", ok, lost)
	}
	a, _ := s.LedgerBalance(ctx, "a")
	b, _ := s.LedgerBalance(ctx, "b")
	if a+b != 3*money.NanosPerUnit {
		t.Fatalf("balances %s + %s", a, b)
	}
}

// The secret never reaches the database file, a redeemed code is in its
// user's export and outlives the user's erasure, and UndoRedeem takes a
// redemption back whole.
func TestCodesStoredHashedExportedKept(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateUser(ctx, User{ID: "u", Email: "u@example.com"}); err != nil {
		t.Fatal(err)
	}
	const secret = "aitc-SecretThatMustNotBeStored0123"
	mintOne(t, s, "c1", secret, 5*money.NanosPerUnit, nil)
	c, e, err := s.RedeemCode(ctx, hashOf(secret), "u", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.UndoRedeem(ctx, c.ID, e.ID); err != nil {
		t.Fatal(err)
	}
	if c, err := s.GetCode(ctx, "c1"); err != nil || c.Status != CodeUnused {
		t.Fatalf("after undo: %+v %v", c, err)
	}
	if _, _, err := s.RedeemCode(ctx, hashOf(secret), "u", time.Now()); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.ExportUser(ctx, "u", time.Now(), &buf); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Codes  []map[string]any `json:"codes"`
		Ledger []LedgerRow      `json:"ledger"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Codes) != 1 || doc.Codes[0]["id"] != "c1" || doc.Codes[0]["amount"] != "5.000000000" ||
		len(doc.Ledger) != 1 || doc.Ledger[0].Kind != "code" || doc.Codes[0]["hash"] != nil {
		t.Fatalf("export %s", buf.String())
	}
	er, err := s.EraseUser(ctx, "u", time.Now())
	if err != nil || er.CodesKept != 1 {
		t.Fatalf("erase: %+v %v", er, err)
	}
	if got, err := s.ListCodes(ctx, CodeQuery{RedeemedBy: "u"}); err != nil || len(got) != 1 {
		t.Fatalf("codes after erasure: %v %v", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "ledger.db*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte("SecretThatMustNotBeStored")) {
			t.Fatalf("%s holds the code's secret", f)
		}
	}
}

// The retention job deletes codes with the payment records: redeemed,
// voided or expired before the cutoff; an unused code that never expires
// stays.
func TestPurgeCodes(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	if _, err := s.CreateUser(ctx, User{ID: "u"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	soon := now.Add(time.Hour)
	mintOne(t, s, "redeemed", "aitc-r", money.NanosPerUnit, nil)
	mintOne(t, s, "void", "aitc-v", money.NanosPerUnit, nil)
	mintOne(t, s, "expiring", "aitc-e", money.NanosPerUnit, &soon)
	mintOne(t, s, "open", "aitc-o", money.NanosPerUnit, nil)
	if _, _, err := s.RedeemCode(ctx, hashOf("aitc-r"), "u", now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VoidCode(ctx, "void", now); err != nil {
		t.Fatal(err)
	}
	res, err := s.Purge(ctx, time.Time{}, now.Add(-time.Hour), now)
	if err != nil || res.Codes != 0 {
		t.Fatalf("cutoff before all: %+v %v", res, err)
	}
	res, err = s.Purge(ctx, time.Time{}, now.Add(2*time.Hour), now)
	if err != nil || res.Codes != 3 || res.AuditID == 0 {
		t.Fatalf("cutoff after all: %+v %v", res, err)
	}
	left, err := s.ListCodes(ctx, CodeQuery{})
	if err != nil || len(left) != 1 || left[0].ID != "open" {
		t.Fatalf("left %v %v", left, err)
	}
	if bal, _ := s.LedgerBalance(ctx, "u"); bal != money.NanosPerUnit {
		t.Fatalf("the purge moved the balance: %s", bal)
	}
}
