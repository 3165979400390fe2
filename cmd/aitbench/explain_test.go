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
