package billing

import (
	"fmt"
	"net/netip"
	"strings"
)

// MaxAllowedIPs bounds a key's allowed_ips list (it is read on every
// request).
const MaxAllowedIPs = 100

// NormalizeAllowedIPs checks a key's allowed_ips (single addresses or CIDR
// ranges, IPv4 or IPv6) and returns them as canonical CIDR strings: host
// bits cleared ("10.1.2.3/8" → "10.0.0.0/8"), a single address as a /32 or
// /128, IPv4-mapped IPv6 as IPv4, duplicates dropped, order kept. An empty
// list means any address.
func NormalizeAllowedIPs(list []string) ([]string, error) {
	if len(list) > MaxAllowedIPs {
		return nil, fmt.Errorf("at most %d entries", MaxAllowedIPs)
	}
	var out []string
	seen := make(map[string]bool, len(list))
	for _, s := range list {
		p, err := parseAllowedIP(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		if c := p.String(); !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out, nil
}

func parseAllowedIP(s string) (netip.Prefix, error) {
	bad := fmt.Errorf("%q is not an IP address or CIDR range (like 203.0.113.7, 10.0.0.0/8 or 2001:db8::/32)", s)
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, bad
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, bad
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// IPAllowed reports whether ip may use a key with the given allowed_ips
// (as NormalizeAllowedIPs writes them). It is the Go twin of the check the
// authorize script makes, for keys served from the local cache while Redis
// is unreachable.
func IPAllowed(allowed []string, ip netip.Addr) bool {
	if len(allowed) == 0 {
		return true
	}
	if !ip.IsValid() {
		return false
	}
	ip16 := netip.AddrFrom16(ip.As16())
	for _, s := range allowed {
		if p, err := parseAllowedIP(s); err == nil && prefix16(p).Contains(ip16) {
			return true
		}
	}
	return false
}

// prefix16 writes p in the 128-bit space where IPv4 is IPv4-mapped, the
// space both checks match in (so ::/0 takes IPv4 addresses too).
func prefix16(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4() {
		return netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), p.Bits()+96)
	}
	return p
}

// addrBits writes an address for the authorize script's allowed_ips check:
// "b" and the 128 bits of its IPv6 form (IPv4 as IPv4-mapped), so that an
// allowed range is a plain string prefix of every address inside it. The
// zero Addr gives "" (unknown), which no range matches.
func addrBits(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	b16 := a.Unmap().As16()
	buf := make([]byte, 1, 129)
	buf[0] = 'b'
	for _, x := range b16 {
		for i := 7; i >= 0; i-- {
			buf = append(buf, '0'+(x>>i)&1)
		}
	}
	return string(buf)
}

// prefixBitsList writes each range (a CIDR or a single address) as the
// string prefix that every addrBits of an address inside it starts with.
// An entry that does not parse (it cannot come from NormalizeAllowedIPs)
// becomes "x", which no address matches: a damaged list fails closed,
// never open.
func prefixBitsList(allowed []string) []string {
	out := make([]string, len(allowed))
	for i, s := range allowed {
		p, err := parseAllowedIP(s)
		if err != nil {
			out[i] = "x"
			continue
		}
		p = prefix16(p)
		out[i] = addrBits(p.Addr())[:1+p.Bits()]
	}
	return out
}
