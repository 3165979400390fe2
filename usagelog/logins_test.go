package usagelog

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

func TestLoginsEmailUniqueAmongSignInUsersOnly(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	// Admin-made users may share an email, as before.
	for range 2 {
		if _, err := s.CreateUser(ctx, User{Email: "a@example.com"}); err != nil {
			t.Fatal(err)
		}
	}
	u, err := s.CreateUser(ctx, User{Email: "A@example.com", PasswordHash: "$argon2id$x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser(ctx, User{Email: "a@EXAMPLE.com", PasswordHash: "$argon2id$y"}); !errors.Is(err, ErrExists) {
		t.Fatalf("second sign-in user with the same email: %v, want ErrExists", err)
	}
	l, err := s.LoginByEmail(ctx, " a@example.COM ")
	if err != nil || l.User.ID != u.ID || l.PasswordHash != "$argon2id$x" || !l.IPLogging || l.EmailVerifiedAt != nil {
		t.Fatalf("LoginByEmail = %+v, %v", l, err)
	}
	if err := s.VerifyEmail(ctx, u.ID, "other@example.com", time.Now()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("verify a stale email: %v", err)
	}
	if err := s.VerifyEmail(ctx, u.ID, "a@example.com", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.SetName(ctx, u.ID, "Ann"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPassword(ctx, u.ID, "$argon2id$z"); err != nil {
		t.Fatal(err)
	}
	l, _ = s.GetLogin(ctx, u.ID)
	if l.User.Name != "Ann" || l.PasswordHash != "$argon2id$z" || l.EmailVerifiedAt == nil {
		t.Fatalf("after changes: %+v", l)
	}
	if err := s.SetEmail(ctx, u.ID, "b@example.com"); err != nil {
		t.Fatal(err)
	}
	if l, _ = s.GetLogin(ctx, u.ID); l.EmailVerifiedAt != nil {
		t.Fatal("a changed email stayed verified")
	}
	if _, err := s.EraseUser(ctx, u.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoginByEmail(ctx, "b@example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an erased user can still sign in: %v", err)
	}
	if l, _ = s.GetLogin(ctx, u.ID); l.PasswordHash != "" || l.EmailVerifiedAt != nil {
		t.Fatalf("erased: %+v", l)
	}
}

func TestIPOptOutAppliesAtInsert(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	keep, _ := s.CreateUser(ctx, User{})
	drop, _ := s.CreateUser(ctx, User{})
	now := time.Now().UTC()
	if _, err := s.InsertUsage(ctx, []Record{rec("r1", drop.ID, now)}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetIPLogging(ctx, drop.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.InsertUsage(ctx, []Record{rec("r2", drop.ID, now), rec("r3", keep.ID, now)}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user string
		ip   string
		n    int
	}{{drop.ID, "", 2}, {keep.ID, "203.0.113.7", 1}} {
		recs, err := s.ListUsage(ctx, UsageQuery{User: c.user})
		if err != nil || len(recs) != c.n {
			t.Fatalf("usage of %s: %d rows, %v", c.user, len(recs), err)
		}
		for _, r := range recs {
			if r.ClientIP != c.ip {
				t.Errorf("%s: client_ip %q, want %q", r.RequestID, r.ClientIP, c.ip)
			}
		}
	}
}

func TestDailySpendAndSpend(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	u, _ := s.CreateUser(ctx, User{})
	other, _ := s.CreateUser(ctx, User{})
	day := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	mk := func(id, user, model string, at time.Time, cost money.Nanos) Record {
		r := rec(id, user, at)
		r.Model, r.Cost = model, cost
		return r
	}
	if _, err := s.InsertUsage(ctx, []Record{
		mk("a", u.ID, "m1", day.Add(time.Hour), 100),
		mk("b", u.ID, "m1", day.Add(2*time.Hour), 50),
		mk("c", u.ID, "m2", day.Add(3*time.Hour), 7),
		mk("d", u.ID, "m1", day.Add(25*time.Hour), 1),
		mk("e", other.ID, "m1", day.Add(time.Hour), 1000),
		mk("f", u.ID, "m1", day.Add(-time.Hour), 9), // before the range
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.DailySpend(ctx, u.ID, day, day.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []DaySpend{{day, "m1", 150, 2}, {day, "m2", 7, 1}, {day.Add(24 * time.Hour), "m1", 1, 1}}
	if len(got) != len(want) {
		t.Fatalf("DailySpend = %+v", got)
	}
	for i := range want {
		if !got[i].Day.Equal(want[i].Day) || got[i].Model != want[i].Model || got[i].Cost != want[i].Cost || got[i].Requests != want[i].Requests {
			t.Errorf("DailySpend[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	if n, err := s.Spend(ctx, u.ID, day, day.Add(24*time.Hour)); err != nil || n != 157 {
		t.Fatalf("Spend = %d, %v; want 157", n, err)
	}
}

func TestClaimInvite(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	inv, err := s.CreateUser(ctx, User{Email: "inv@example.com", Name: "Admin's name"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.InvitedByEmail(ctx, "nobody@example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown email: %v", err)
	}
	u, err := s.InvitedByEmail(ctx, "INV@example.com")
	if err != nil || u.ID != inv.ID {
		t.Fatalf("InvitedByEmail = %+v, %v", u, err)
	}
	if err := s.ClaimInvite(ctx, inv.ID, "other@example.com", "$argon2id$x", "", time.Now()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("claim with a stale email: %v", err)
	}
	if err := s.ClaimInvite(ctx, inv.ID, "inv@example.com", "$argon2id$x", "", time.Now()); err != nil {
		t.Fatal(err)
	}
	l, err := s.LoginByEmail(ctx, "inv@example.com")
	if err != nil || l.User.ID != inv.ID || l.User.Name != "Admin's name" || l.EmailVerifiedAt == nil {
		t.Fatalf("after the claim: %+v, %v", l, err)
	}
	if err := s.ClaimInvite(ctx, inv.ID, "inv@example.com", "$argon2id$y", "", time.Now()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second claim: %v", err)
	}
	if _, err := s.InvitedByEmail(ctx, "inv@example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a claimed user is still invited: %v", err)
	}
}
