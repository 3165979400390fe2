package billing

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func TestNormalizeAllowedIPs(t *testing.T) {
	got, err := NormalizeAllowedIPs([]string{
		"203.0.113.7", " 10.1.2.3/8 ", "2001:db8::1", "2001:db8:abcd::/33", "::ffff:192.0.2.0/120",
		"10.0.0.0/8", "0.0.0.0/0",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"203.0.113.7/32", "10.0.0.0/8", "2001:db8::1/128", "2001:db8:8000::/33", "192.0.2.0/24", "0.0.0.0/0"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if got, err := NormalizeAllowedIPs(nil); err != nil || got != nil {
		t.Fatalf("empty list: %q %v", got, err)
	}
	for _, bad := range []string{"", "10.0.0.0/33", "::/129", "1.2.3", "localhost", "fe80::1%eth0", "10.0.0.0/8/8", "1.2.3.4:80"} {
		if _, err := NormalizeAllowedIPs([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := NormalizeAllowedIPs(make([]string, MaxAllowedIPs+1)); err == nil {
		t.Error("too many entries accepted")
	}
}

// Authorize refuses exactly the addresses outside a key's allowed_ips.
func TestAuthorizeAllowedIPs(t *testing.T) {
	a, _ := newTestAccounts(t)
	ctx := t.Context()
	credit(t, a, "alice", 1_000_000)
	for i, tc := range []struct {
		allowed []string
		ip      string // "" = unknown
		ok      bool
	}{
		{nil, "", true},
		{nil, "198.51.100.1", true},
		{[]string{"198.51.100.1"}, "198.51.100.1", true},
		{[]string{"198.51.100.1"}, "198.51.100.2", false},
		{[]string{"198.51.100.1"}, "", false},
		{[]string{"198.51.100.1"}, "::ffff:198.51.100.1", true},
		{[]string{"10.0.0.0/8"}, "10.255.0.1", true},
		{[]string{"10.0.0.0/8"}, "11.0.0.1", false},
		{[]string{"172.16.0.0/12"}, "172.31.255.255", true}, // prefix ends inside a nibble
		{[]string{"172.16.0.0/12"}, "172.32.0.0", false},
		{[]string{"172.16.0.0/13"}, "172.24.0.1", false},
		{[]string{"172.16.0.0/13"}, "172.23.0.1", true},
		{[]string{"0.0.0.0/0"}, "8.8.8.8", true},
		{[]string{"0.0.0.0/0"}, "2001:db8::1", false},
		{[]string{"::/0"}, "2001:db8::1", true},
		{[]string{"::/0"}, "8.8.8.8", true}, // every address, IPv4 too
		{[]string{"2001:db8::/32"}, "2001:db8:ffff::1", true},
		{[]string{"2001:db8::/32"}, "2001:db9::1", false},
		{[]string{"2001:db8::/32"}, "32.1.13.184", false}, // 0x20010db8 as IPv4
		{[]string{"::1"}, "::1", true},
		{[]string{"::1"}, "127.0.0.1", false},
		{[]string{"192.0.2.0/24", "::1", "127.0.0.0/8"}, "127.0.0.1", true},
		{[]string{"192.0.2.0/24", "::1", "127.0.0.0/8"}, "::1", true},
		{[]string{"192.0.2.0/24", "::1", "127.0.0.0/8"}, "10.0.0.1", false},
		{[]string{"not-a-range"}, "10.0.0.1", false}, // a damaged record fails closed
	} {
		hash := HashKey("sk-ait-ip-" + string(rune('a'+i)))
		if err := a.PutKey(ctx, hash, KeyRecord{ID: "key_ip", User: "alice", Active: true, AllowedIPs: tc.allowed}); err != nil {
			t.Fatal(err)
		}
		var ip netip.Addr
		if tc.ip != "" {
			ip = netip.MustParseAddr(tc.ip)
		}
		if got := IPAllowed(tc.allowed, ip); got != tc.ok {
			t.Errorf("IPAllowed(%q, %s) = %v, want %v", tc.allowed, tc.ip, got, tc.ok)
		}
		for _, check := range []bool{true, false} {
			g, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, ClientIP: ip, CheckOnly: check, Hold: 1, RequestID: "r" + string(rune('a'+i))})
			switch {
			case tc.ok && err != nil:
				t.Errorf("%q from %s (check %v): %v", tc.allowed, tc.ip, check, err)
			case !tc.ok && !errors.Is(err, ErrIPNotAllowed):
				t.Errorf("%q from %s (check %v): err %v, want ErrIPNotAllowed", tc.allowed, tc.ip, check, err)
			case !tc.ok && g.KeyID != "key_ip":
				t.Errorf("refusal names key %q", g.KeyID)
			case tc.ok && !slices.Equal(g.Key.AllowedIPs, tc.allowed):
				t.Errorf("grant's key record allows %q, want %q", g.Key.AllowedIPs, tc.allowed)
			}
			if err == nil && !check {
				if _, err := a.Settle(ctx, g, 0, 0, []byte(`{}`), SettleReplay); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// A refused address reserves nothing and counts nothing.
func TestAuthorizeIPRefusalLeavesNoTrace(t *testing.T) {
	a, rdb := newTestAccounts(t)
	ctx := t.Context()
	credit(t, a, "bob", 1_000)
	hash := HashKey("sk-ait-ip-trace")
	if err := a.PutKey(ctx, hash, KeyRecord{ID: "key_t", User: "bob", Active: true, RPM: 1, AllowedIPs: []string{"192.0.2.0/24"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		_, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, ClientIP: netip.MustParseAddr("198.51.100.9"), Hold: 2_000, RequestID: "x" + string(rune('0'+i))})
		if !errors.Is(err, ErrIPNotAllowed) {
			t.Fatalf("want ErrIPNotAllowed before the quota check, got %v", err)
		}
	}
	wantBalance(t, a, "bob", 1_000, 0)
	if zset, amts := holdIDs(t, rdb, "bob"); len(zset) != 0 || len(amts) != 0 {
		t.Fatalf("holds left: %v %v", zset, amts)
	}
	// The rpm window was not touched: the allowed address still gets its one request.
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, ClientIP: netip.MustParseAddr("192.0.2.44"), Hold: 10, RequestID: "ok"}); err != nil {
		t.Fatal(err)
	}
	// Replacing the record without allowed_ips lifts the restriction.
	if err := a.PutKey(ctx, hash, KeyRecord{ID: "key_t", User: "bob", Active: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authorize(ctx, AuthRequest{KeyHash: hash, CheckOnly: true}); err != nil {
		t.Fatalf("unrestricted key from an unknown address: %v", err)
	}
}
