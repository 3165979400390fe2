package main

import (
	"strings"
	"testing"
)

// TestRowNotes keeps the report's explanations complete: every row of the
// results table says what it means, every row with a target why it can
// fall short, and the notes name no row that no longer exists.
func TestRowNotes(t *testing.T) {
	res := results{customers: 1000}
	rows := res.rows()
	names := map[string]bool{}
	for _, r := range rows {
		names[noteKey(r.metric)] = true
		n, ok := rowNotes[noteKey(r.metric)]
		switch {
		case !ok || n.means == "":
			t.Errorf("row %q: no note of what it means", r.metric)
		case r.target != "—" && n.short == "":
			t.Errorf("row %q has a target (%s) but no note of why it can fall short", r.metric, r.target)
		}
	}
	for m := range rowNotes {
		if !names[m] {
			t.Errorf("rowNotes has a note for %q, which is no row", m)
		}
	}
	rows[0].verdict = "FAIL"
	var b strings.Builder
	writeNotes(&b, rows)
	if !strings.Contains(b.String(), "caddy + Redis CPU") {
		t.Errorf("a failing JSON throughput row is not explained:\n%s", b.String())
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Count(line, " | ") >= 5 {
			t.Errorf("a note looks like a row of the results table: %q", line)
		}
	}
}

// TestRoundsLine sums up per-round ratios by their lowest, median and
// highest, the median of an even count being the mean of the middle two.
func TestRoundsLine(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want string
	}{
		{nil, "none"},
		{[]float64{0.9}, "lowest 90.0 %, median 90.0 %, highest 90.0 % (1 rounds)"},
		{[]float64{0.8, 0.7, 0.9}, "lowest 70.0 %, median 80.0 %, highest 90.0 % (3 rounds)"},
		{[]float64{0.9, 0.6, 0.8, 0.7}, "lowest 60.0 %, median 75.0 %, highest 90.0 % (4 rounds)"},
	} {
		if got := roundsLine(c.in); got != c.want {
			t.Errorf("roundsLine(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}
