package billing

import (
	"encoding/json"
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
