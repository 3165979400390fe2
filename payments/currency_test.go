package payments

import (
	"testing"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

func TestMinorUnits(t *testing.T) {
	for _, c := range []struct {
		cur    string
		minor  int64
		nanos  money.Nanos
		format string
	}{
		{"USD", 2000, 20 * money.NanosPerUnit, "20.00"},
		{"usd", 1, 10_000_000, "0.01"},
		{"EUR", 1999, 19_990_000_000, "19.99"},
		{"JPY", 500, 500 * money.NanosPerUnit, "500"},
		{"krw", 10000, 10000 * money.NanosPerUnit, "10000"},
		{"KWD", 1250, 1_250_000_000, "1.250"},
		{"ISK", 100, 1 * money.NanosPerUnit, "1.00"},
		{"USD", -550, -5_500_000_000, "-5.50"},
	} {
		n, err := MinorToNanos(c.minor, c.cur)
		if err != nil || n != c.nanos {
			t.Errorf("MinorToNanos(%d, %s) = %d, %v; want %d", c.minor, c.cur, n, err, c.nanos)
		}
		m, err := NanosToMinor(c.nanos, c.cur)
		if err != nil || m != c.minor {
			t.Errorf("NanosToMinor(%d, %s) = %d, %v; want %d", c.nanos, c.cur, m, err, c.minor)
		}
		if got := FormatMinor(c.minor, c.cur); got != c.format {
			t.Errorf("FormatMinor(%d, %s) = %q; want %q", c.minor, c.cur, got, c.format)
		}
	}
	if _, err := NanosToMinor(20_005_000_000, "USD"); err == nil {
		t.Error("20.005 USD has no cent amount, want an error")
	}
	if _, err := NanosToMinor(500_500_000_000, "JPY"); err == nil {
		t.Error("500.5 JPY has no yen amount, want an error")
	}
	if _, err := MinorToNanos(1<<62, "JPY"); err == nil {
		t.Error("overflow not reported")
	}
}

func TestShare(t *testing.T) {
	const credit = 20 * money.NanosPerUnit
	for _, c := range []struct {
		total       money.Nanos
		part, whole int64
		want        money.Nanos
	}{
		{credit, 500, 2000, 5 * money.NanosPerUnit},
		{credit, 2000, 2000, credit},
		{credit, 2500, 2000, credit},
		{credit, 0, 2000, 0},
		{credit, -1, 2000, 0},
		{10, 1, 3, 3},
		{1<<63 - 1, 1<<62 + 1, 1<<63 - 1, 1<<62 + 1}, // no overflow in the product
	} {
		if got := Share(c.total, c.part, c.whole); got != c.want {
			t.Errorf("Share(%d, %d, %d) = %d; want %d", c.total, c.part, c.whole, got, c.want)
		}
	}
}
