package usagelog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// day is the retention unit of the tests.
const day = 24 * time.Hour

// putOldPayment stores a payment as if last changed at t.
func putOldPayment(t *testing.T, s *Store, ref, user string, t0 time.Time) Payment {
	t.Helper()
	p := Payment{Ref: ref, Kind: PaymentTopup, User: user, TopupID: ref, AmountMinor: 1000, Currency: "USD",
		Credited: money.Nanos(10e9), Status: "paid", CreatedAt: t0}
	if err := putPayment(context.Background(), s.wr, &p, t0); err != nil {
		t.Fatal(err)
	}
	return p
}

func balances(t *testing.T, s *Store, users ...string) map[string]money.Nanos {
	t.Helper()
	out := map[string]money.Nanos{}
	for _, u := range users {
		b, err := s.LedgerBalance(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		out[u] = b
	}
	return out
}

func requestIDs(t *testing.T, s *Store) []string {
	t.Helper()
	recs, err := s.ListUsage(context.Background(), UsageQuery{Limit: MaxUsageLimit})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.RequestID)
	}
	slices.Sort(ids)
	return ids
}

func TestPurgeDeletesExactlyWhatIsPastRetentionAndKeepsBalances(t *testing.T) {
	for _, chunk := range []int{10000, 2, 1} {
		t.Run(fmt.Sprintf("chunk=%d", chunk), func(t *testing.T) {
			defer func(old int) { purgeChunk = old }(purgeChunk)
			purgeChunk = chunk
			testPurge(t)
		})
	}
}

func testPurge(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	// The injected clock: "now" is far from the real one, so nothing in
	// the test depends on when it runs.
	now := time.Date(2031, 6, 1, 12, 0, 0, 0, time.UTC)
	usageBefore, paymentsBefore := now.Add(-365*day), now.Add(-2555*day)
	for _, u := range []string{"u1", "u2", "u3"} {
		if _, err := s.CreateUser(ctx, User{ID: u, Email: u + "@example.com"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddLedgerEntry(ctx, u, money.Nanos(10e9), "credit", "", ""); err != nil {
			t.Fatal(err)
		}
	}
	old := func(id, user string, age time.Duration, cost money.Nanos) Record {
		r := rec(id, user, now.Add(-age))
		r.Cost = cost
		return r
	}
	recs := []Record{
		old("u1-old-a", "u1", 400*day, 1_000),
		old("u1-old-b", "u1", 366*day, 2_000),
		old("u1-old-c", "u1", 365*day+time.Nanosecond, 4_000), // one nanosecond past its age
		old("u1-edge", "u1", 365*day, 8_000),                  // exactly at the cutoff: kept
		old("u1-new", "u1", day, 16_000),
		old("u2-old", "u2", 700*day, 32_000),
		old("u2-old-free", "u2", 500*day, 0),
		old("u2-new", "u2", 0, 64_000),
		old("u3-old-free", "u3", 500*day, 0), // old but free: no roll-up entry
		old("ghost-old", "ghost", 400*day, 128_000),
		old("ghost-new", "ghost", 10*day, 256_000),
	}
	if _, err := s.InsertUsage(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// Rejects: one received 400 days ago, one recently.
	if _, err := s.insertBatch(ctx, nil, []reject{{"s", "1-0", "junk", "bad"}, {"s", "2-0", "junk", "bad"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.wr.Exec(`UPDATE usage_rejects SET received_at = CASE entry_id WHEN '1-0' THEN ? ELSE ? END`,
		unixNanos(now.Add(-400*day)), unixNanos(now.Add(-day))); err != nil {
		t.Fatal(err)
	}
	// Payments: one last changed 8 years ago (with its ledger credit),
	// one just inside the 2555 days, one recent.
	putOldPayment(t, s, "topup:p-old", "u1", now.Add(-8*365*day))
	putOldPayment(t, s, "topup:p-edge", "u1", now.Add(-2555*day+time.Second))
	putOldPayment(t, s, "topup:p-new", "u2", now.Add(-day))
	if _, err := s.wr.Exec(`INSERT INTO stripe_events (id, type, received_at) VALUES ('evt_old', 't', ?), ('evt_new', 't', ?)`,
		unixNanos(now.Add(-3000*day)), unixNanos(now.Add(-day))); err != nil {
		t.Fatal(err)
	}

	users := []string{"u1", "u2", "u3"}
	before := balances(t, s, users...)
	ledgerBefore, _ := s.LedgerEntries(ctx, "u1")

	res, err := s.Purge(ctx, usageBefore, paymentsBefore, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := balances(t, s, users...); !maps(got, before) {
		t.Fatalf("balances moved: %v, want %v", got, before)
	}
	want := []string{"ghost-new", "u1-edge", "u1-new", "u2-new"}
	if got := requestIDs(t, s); !slices.Equal(got, want) {
		t.Fatalf("usage left %v, want %v", got, want)
	}
	if res.UsageRows != 7 || res.UsageCost != 1_000+2_000+4_000+32_000+128_000 || res.RollupEntries < 2 ||
		res.UnattributedRows != 1 || res.Rejects != 1 || res.Payments != 1 || res.Events != 1 || res.AuditID == 0 {
		t.Fatalf("result %+v", res)
	}
	// The roll-ups (one per user and chunk) carry exactly the deleted
	// cost; every earlier entry is still there.
	for u, cost := range map[string]money.Nanos{"u1": 7_000, "u2": 32_000} {
		entries, err := s.LedgerEntries(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		var sum money.Nanos
		for _, e := range entries {
			if e.Kind == KindUsageRollup {
				sum += e.Amount
				if !strings.HasPrefix(e.Ref, "usage_rollup:"+u+":") {
					t.Fatalf("roll-up ref %q", e.Ref)
				}
			}
		}
		if sum != -cost {
			t.Fatalf("%s roll-ups sum to %s, want %s", u, sum, -cost)
		}
	}
	if entries, _ := s.LedgerEntries(ctx, "u3"); len(entries) != 1 {
		t.Fatalf("a free row made a roll-up: %+v", entries)
	}
	if after, _ := s.LedgerEntries(ctx, "u1"); len(after) < len(ledgerBefore) || after[0] != ledgerBefore[0] {
		t.Fatalf("ledger entries were deleted: %+v", after)
	}
	ps, err := s.PaymentsPage(ctx, PaymentQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, p := range ps {
		refs = append(refs, p.Ref)
	}
	if slices.Sort(refs); !slices.Equal(refs, []string{"topup:p-edge", "topup:p-new"}) {
		t.Fatalf("payments left %v", refs)
	}
	if n := countRows(t, s, "usage_rejects"); n != 1 {
		t.Fatalf("%d rejects left, want 1", n)
	}
	audit, err := s.ListAudit(ctx, AuditQuery{Action: AuditRetention})
	if err != nil || len(audit) != 1 || audit[0].ID != res.AuditID {
		t.Fatalf("audit %+v %v", audit, err)
	}

	// Running again deletes nothing, makes no entry and records nothing.
	again, err := s.Purge(ctx, usageBefore, paymentsBefore, now)
	if err != nil || again.Deleted() || again.RollupEntries != 0 || again.AuditID != 0 {
		t.Fatalf("second run: %+v %v", again, err)
	}
	// A day later the edge row is past its age; the balance still holds.
	next, err := s.Purge(ctx, usageBefore.Add(day), paymentsBefore.Add(day), now.Add(day))
	if err != nil || next.UsageRows != 1 || next.Payments != 1 {
		t.Fatalf("next day: %+v %v", next, err)
	}
	if got := balances(t, s, users...); !maps(got, before) {
		t.Fatalf("balances moved: %v, want %v", got, before)
	}
	all, err := s.Balances(ctx)
	if err != nil || all["u1"] != before["u1"] {
		t.Fatalf("Balances %v %v", all, err)
	}
}

func maps(a, b map[string]money.Nanos) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestPurgeZeroCutoffsSkip(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	if _, err := s.InsertUsage(ctx, []Record{rec("r1", "x", time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC))}); err != nil {
		t.Fatal(err)
	}
	putOldPayment(t, s, "topup:old", "x", time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC))
	res, err := s.Purge(ctx, time.Time{}, time.Time{}, time.Now())
	if err != nil || res.Deleted() {
		t.Fatalf("%+v %v", res, err)
	}
	if countRows(t, s, "usage") != 1 || countRows(t, s, "payments") != 1 {
		t.Fatal("a zero cutoff deleted rows")
	}
}

func TestEraseUser(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	for _, u := range []User{{ID: "gone", Email: "gone@example.com", Name: "Gone Person"}, {ID: "stay", Email: "stay@example.com"}} {
		if _, err := s.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	for i, owner := range []string{"gone", "gone", "stay"} {
		k := Key{ID: fmt.Sprintf("k%d", i), UserID: owner, Name: "laptop of " + owner, Hash: fmt.Sprintf("hash%d", i),
			AllowedIPs: []string{"198.51.100.1"}}
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RevokeKey(ctx, "k1", time.Time{}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := s.InsertUsage(ctx, []Record{rec("g1", "gone", now), rec("g2", "gone", now), rec("s1", "stay", now)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.insertBatch(ctx, nil, []reject{
		{"s", "1-0", `{"user":"gone","request_id":1}`, "bad"},
		{"s", "2-0", `{"user":"stay","request_id":1}`, "bad"},
		{"s", "3-0", `{"user":"gone2"}`, "bad"},
	}); err != nil {
		t.Fatal(err)
	}
	putOldPayment(t, s, "topup:pay", "gone", now)
	if _, err := s.AddLedgerEntry(ctx, "gone", money.Nanos(5e9), "credit", "", ""); err != nil {
		t.Fatal(err)
	}
	balBefore := balances(t, s, "gone")

	e, err := s.EraseUser(ctx, "gone", now)
	if err != nil {
		t.Fatal(err)
	}
	if e.AlreadyDeleted || e.KeysRevoked != 1 || e.UsageAnonymised != 2 || e.RejectsDeleted != 1 ||
		e.PaymentsKept != 1 || e.AuditID == 0 || len(e.Keys) != 2 {
		t.Fatalf("erasure %+v", e)
	}
	u, err := s.GetUser(ctx, "gone")
	if err != nil || u.Email != "" || u.Name != "" || u.Status != UserDeleted {
		t.Fatalf("user after erase: %+v %v", u, err)
	}
	keys, _ := s.ListKeys(ctx, "gone")
	for _, k := range keys {
		if k.Status != KeyRevoked || k.Name != "" || k.AllowedIPs != nil || k.RevokedAt == nil {
			t.Fatalf("key after erase: %+v", k)
		}
	}
	if k, _ := s.GetKey(ctx, "k2"); k.Status != KeyActive || k.Name == "" {
		t.Fatalf("another user's key changed: %+v", k)
	}
	recs, _ := s.ListUsage(ctx, UsageQuery{})
	for _, r := range recs {
		if (r.User == "gone") != (r.ClientIP == "") {
			t.Fatalf("usage row %s of %s has client_ip %q", r.RequestID, r.User, r.ClientIP)
		}
	}
	if n := countRows(t, s, "usage_rejects"); n != 2 {
		t.Fatalf("%d rejects left, want 2", n)
	}
	if n := countRows(t, s, "payments"); n != 1 {
		t.Fatalf("payments deleted")
	}
	if got := balances(t, s, "gone"); !maps(got, balBefore) {
		t.Fatalf("erasure moved the balance: %v, want %v", got, balBefore)
	}
	if err := s.CreateKey(ctx, Key{ID: "k9", UserID: "gone", Hash: "hash9"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("key for an erased user: %v", err)
	}

	// A request in flight at the erasure settles afterwards, however much
	// later (a journal replayed after days): its row is stored without
	// its IP, as an opted-out user's, so the scrub finds nothing to clear.
	if _, err := s.InsertUsage(ctx, []Record{rec("g3", "gone", now), rec("s2", "stay", now)}); err != nil {
		t.Fatal(err)
	}
	recs, _ = s.ListUsage(ctx, UsageQuery{})
	for _, r := range recs {
		if (r.User == "gone") != (r.ClientIP == "") {
			t.Fatalf("late row %s of %s has client_ip %q", r.RequestID, r.User, r.ClientIP)
		}
	}
	if n, err := s.ScrubErased(ctx, now.Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("scrub: %d %v", n, err)
	}
	// The scrub still clears rows stored with an IP (by a ledger from
	// before erasures opted the user out), and only for erased users.
	if _, err := s.wr.ExecContext(ctx, `UPDATE usage SET client_ip = '203.0.113.7' WHERE request_id IN ('g3', 's2')`); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ScrubErased(ctx, now.Add(time.Second)); err != nil || n != 0 {
		t.Fatalf("scrub of later erasures: %d %v", n, err)
	}
	if n, err := s.ScrubErased(ctx, now.Add(-time.Hour)); err != nil || n != 1 {
		t.Fatalf("scrub: %d %v", n, err)
	}

	again, err := s.EraseUser(ctx, "gone", now)
	if err != nil || !again.AlreadyDeleted || again.AuditID != 0 || again.KeysRevoked != 0 {
		t.Fatalf("second erase %+v %v", again, err)
	}
	audit, _ := s.ListAudit(ctx, AuditQuery{User: "gone"})
	if len(audit) != 1 || audit[0].Action != AuditUserDelete || !strings.Contains(string(audit[0].Detail), `"keys_revoked":1`) {
		t.Fatalf("audit %+v", audit)
	}
	if _, err := s.EraseUser(ctx, "nobody", now); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
}

func TestExportUser(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	if _, err := s.CreateUser(ctx, User{ID: "u", Email: "u@example.com", Name: "U"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser(ctx, User{ID: "other"}); err != nil {
		t.Fatal(err)
	}
	const hash = "00aa11bb22cc33dd44ee55ff66007788990011223344556677889900aabbccdd"
	if err := s.CreateKey(ctx, Key{ID: "k1", UserID: "u", Hash: hash, Prefix: "sk-ait-abcd"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddLedgerEntry(ctx, "u", money.Nanos(3e9), "credit", "welcome", ""); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	var recs []Record
	for i := range 250 {
		recs = append(recs, rec(fmt.Sprintf("r%03d", i), "u", now.Add(time.Duration(i)*time.Second)))
	}
	recs = append(recs, rec("x1", "other", now))
	if _, err := s.InsertUsage(ctx, recs); err != nil {
		t.Fatal(err)
	}
	putOldPayment(t, s, "topup:t1", "u", now)
	if _, err := s.AddAudit(ctx, now, AuditUserExport, "u", nil); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	if err := s.ExportUser(ctx, "u", now, &buf); err != nil {
		t.Fatal(err)
	}
	if !json.Valid(buf.Bytes()) {
		t.Fatalf("not one JSON document: %.300s", buf.String())
	}
	if strings.Contains(buf.String(), hash) || strings.Contains(buf.String(), `"hash"`) {
		t.Fatal("export shows the key hash")
	}
	var doc struct {
		Export
		Usage []Record `json:"usage"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.User.Email != "u@example.com" || len(doc.Keys) != 1 || len(doc.Ledger) != 1 || len(doc.Payments) != 1 ||
		len(doc.Audit) != 1 || len(doc.Usage) != 250 || doc.Balance != money.Nanos(3e9)-250*123_456 ||
		!doc.ExportedAt.Equal(now) {
		t.Fatalf("export: user %+v keys %d ledger %d payments %d audit %d usage %d balance %s",
			doc.User, len(doc.Keys), len(doc.Ledger), len(doc.Payments), len(doc.Audit), len(doc.Usage), doc.Balance)
	}
	if doc.Usage[0].RequestID != "r000" || doc.Usage[249].RequestID != "r249" || doc.Usage[0].ClientIP == "" {
		t.Fatalf("usage order or content: %+v", doc.Usage[0])
	}
	if doc.EmailVerifiedAt != nil || !doc.IPLogging {
		t.Fatalf("account settings before: verified %v, ip logging %v", doc.EmailVerifiedAt, doc.IPLogging)
	}
	// What the user chose and proved is in the export too.
	verified := now.Add(-time.Hour)
	if err := s.VerifyEmail(ctx, "u", "u@example.com", verified); err != nil {
		t.Fatal(err)
	}
	if err := s.SetIPLogging(ctx, "u", false); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := s.ExportUser(ctx, "u", now, &buf); err != nil {
		t.Fatal(err)
	}
	doc.EmailVerifiedAt, doc.IPLogging = nil, true
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.EmailVerifiedAt == nil || !doc.EmailVerifiedAt.Equal(verified) || doc.IPLogging {
		t.Fatalf("account settings after: verified %v (want %v), ip logging %v", doc.EmailVerifiedAt, verified, doc.IPLogging)
	}

	buf.Reset()
	if err := s.ExportUser(ctx, "nobody", now, &buf); !errors.Is(err, ErrNotFound) || buf.Len() != 0 {
		t.Fatalf("unknown user: %v, wrote %d bytes", err, buf.Len())
	}
	// An empty user exports empty lists, not nulls.
	buf.Reset()
	if err := s.ExportUser(ctx, "other", now, &buf); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{`"keys":[]`, `"ledger":[]`, `"payments":[]`, `"audit":[]`} {
		if !strings.Contains(buf.String(), f) {
			t.Fatalf("export of a bare user lacks %s: %s", f, buf.String())
		}
	}
}

func TestSummarizeUsage(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	d1 := time.Date(2026, 3, 1, 23, 59, 0, 0, time.UTC)
	d2 := d1.Add(2 * time.Minute) // the next UTC day
	a := rec("a", "u", d1)
	b := rec("b", "u", d2)
	b.Model = "other"
	c := rec("c", "u", d2)
	x := rec("x", "v", d2)
	if _, err := s.InsertUsage(ctx, []Record{a, b, c, x}); err != nil {
		t.Fatal(err)
	}
	groups, total, err := s.SummarizeUsage(ctx, SummaryQuery{User: "u", GroupBy: GroupByModel})
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 2 || groups[0].Model != "deepseek-v4-flash" || groups[0].Requests != 2 || groups[1].Model != "other" ||
		total.Requests != 3 || total.Cost != 3*123_456 || total.InputTokens != 3*1200 || total.CachedInputTokens != 3000 ||
		total.OutputTokens != 3*350 || total.ReasoningTokens != 300 {
		t.Fatalf("by model: %+v total %+v", groups, total)
	}
	groups, total, err = s.SummarizeUsage(ctx, SummaryQuery{User: "u", GroupBy: GroupByDay})
	if err != nil || len(groups) != 2 || groups[0].Day != "2026-03-01" || groups[0].Requests != 1 ||
		groups[1].Day != "2026-03-02" || groups[1].Requests != 2 || total.Requests != 3 {
		t.Fatalf("by day: %+v total %+v %v", groups, total, err)
	}
	groups, total, err = s.SummarizeUsage(ctx, SummaryQuery{From: d2, To: d2.Add(time.Second)})
	if err != nil || len(groups) != 0 || total.Requests != 3 {
		t.Fatalf("window: %+v total %+v %v", groups, total, err)
	}
	if _, _, err := s.SummarizeUsage(ctx, SummaryQuery{GroupBy: "key"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad group: %v", err)
	}
}

func TestPaymentsPage(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		putOldPayment(t, s, fmt.Sprintf("topup:%d", i), "u", t0.Add(time.Duration(i)*time.Hour))
	}
	putOldPayment(t, s, "topup:v", "v", t0)
	var got []string
	var before int64
	for {
		page, err := s.PaymentsPage(ctx, PaymentQuery{User: "u", Limit: 2, Before: before})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, p := range page {
			got = append(got, p.Ref)
		}
		before = page[len(page)-1].ID
	}
	if want := []string{"topup:4", "topup:3", "topup:2", "topup:1", "topup:0"}; !slices.Equal(got, want) {
		t.Fatalf("pages %v, want %v", got, want)
	}
	if _, err := s.PaymentsPage(ctx, PaymentQuery{Before: 999}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown cursor: %v", err)
	}
}
