package money

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"testing"
)

func TestParseNanos(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Nanos
		ok   bool
	}{
		{"10.50", 10_500_000_000, true},
		{"0.000000001", 1, true},
		{"-3", -3_000_000_000, true},
		{".5", 500_000_000, true},
		{"+1.", 1_000_000_000, true},
		{"1.0000000001", 0, false},
		{"1e3", 0, false},
		{"", 0, false},
		{".", 0, false},
		{"abc", 0, false},
		{"1,5", 0, false},
		{"99999999999", 0, false},
		{"9007199.254740991", MaxNanos, true},
		{"9007199.254740992", 0, false},
	} {
		got, err := ParseNanos(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseNanos(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestNanosJSON(t *testing.T) {
	b, _ := json.Marshal(Nanos(-250_000_000))
	if string(b) != `"-0.250000000"` {
		t.Fatalf("marshal: %s", b)
	}
	var n Nanos
	if err := json.Unmarshal([]byte(`"12.5"`), &n); err != nil || n != 12_500_000_000 {
		t.Fatalf("unmarshal: %d %v", n, err)
	}
	if err := json.Unmarshal([]byte(`12.5`), &n); err != nil {
		t.Fatalf("bare literal: %v", err)
	}
}

func TestAppendDecimalMatchesSprintf(t *testing.T) {
	for _, n := range []Nanos{0, 1, -1, 999_999_999, 1_000_000_000, -1_000_000_001, 123_456_789_012, math.MaxInt64, math.MinInt64} {
		u, sign := uint64(n), ""
		if n < 0 {
			sign, u = "-", uint64(-n)
		}
		want := fmt.Sprintf("%s%d.%09d", sign, u/NanosPerUnit, u%NanosPerUnit)
		if got := n.String(); got != want {
			t.Errorf("Nanos(%d).String() = %q, want %q", int64(n), got, want)
		}
		if got := string(n.AppendDecimal([]byte("x"))); got != "x"+want {
			t.Errorf("AppendDecimal = %q", got)
		}
	}
}

// Amounts are bounded by MaxNanos (2^53 - 1), the range Redis Lua compares
// exactly: ParseNanos refuses anything beyond it as out of range.
func TestParseNanosRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Nanos
		err  error
	}{
		{"9007199.254740991", MaxNanos, nil},
		{"-9007199.254740991", -MaxNanos, nil},
		{"9007199.254740992", 0, ErrAmountRange},
		{"-9007199.254740992", 0, ErrAmountRange},
		{"9007200", 0, ErrAmountRange},
		{"9000000000", 0, ErrAmountRange},
		{"99999999999999999999999", 0, ErrAmountRange},
		{"9223372036.854775807", 0, ErrAmountRange},
	} {
		got, err := ParseNanos(tc.in)
		if !errors.Is(err, tc.err) || got != tc.want {
			t.Errorf("ParseNanos(%q) = %d, %v; want %d, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
	var n Nanos
	if err := json.Unmarshal([]byte(`"9000000000"`), &n); !errors.Is(err, ErrAmountRange) {
		t.Errorf("unmarshal 9000000000: %v", err)
	}
	if MaxNanos.String() != "9007199.254740991" || MaxNanos != 1<<53-1 {
		t.Errorf("MaxNanos = %s", MaxNanos)
	}
}

func TestCheckCredit(t *testing.T) {
	for _, tc := range []struct {
		bal, amt, want Nanos
		ok             bool
	}{
		{0, MaxNanos, MaxNanos, true},
		{1, MaxNanos, 0, false},
		{MaxNanos, 1, 0, false},
		{MaxNanos, -1, MaxNanos - 1, true},
		{-MaxNanos, -1, 0, false},
		{-MaxNanos, MaxNanos, 0, true},
		{0, MaxNanos + 1, 0, false},
		{0, -MaxNanos - 1, 0, false},
		// A balance stored out of range may move towards the range only.
		{9_000_000_000 * NanosPerUnit, -NanosPerUnit, 8_999_999_999 * NanosPerUnit, true},
		{9_000_000_000 * NanosPerUnit, 1, 0, false},
		{math.MaxInt64, 1, 0, false},
		{math.MinInt64, -1, 0, false},
		{math.MinInt64 + 5, 1, math.MinInt64 + 6, true},
	} {
		got, err := CheckCredit(tc.bal, tc.amt)
		if (err == nil) != tc.ok || got != tc.want || (err != nil && !errors.Is(err, ErrAmountRange)) {
			t.Errorf("CheckCredit(%d, %d) = %d, %v; want %d ok=%v", tc.bal, tc.amt, got, err, tc.want, tc.ok)
		}
	}
	if ClampNanos(math.MaxInt64) != MaxNanos || ClampNanos(math.MinInt64) != -MaxNanos || ClampNanos(-5) != -5 {
		t.Error("ClampNanos")
	}
}
