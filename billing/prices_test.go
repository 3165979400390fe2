package billing

import "testing"

func mustNanos(t *testing.T, s string) Nanos {
	t.Helper()
	n, err := ParseNanos(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPriceCost(t *testing.T) {
	flash := Price{Input: mustNanos(t, "0.14"), CachedInput: mustNanos(t, "0.0028"), Output: mustNanos(t, "0.28")}
	for _, tc := range []struct {
		name string
		tok  Tokens
		want Nanos
	}{
		// 392 miss·140000000 + 4608 hit·2800000 + 900·280000000 = 54880000000+12902400000+252000000000 = 319782400000 / 1e6 = 319782.4 → 319783
		{"deepseek cached", Tokens{Input: 5000, CachedInput: 4608, Output: 900}, 319783},
		{"exact", Tokens{Input: 1_000_000}, 140_000_000},
		{"one token rounds up", Tokens{Output: 1}, 280},
		{"zero", Tokens{}, 0},
		{"cached capped at input", Tokens{Input: 10, CachedInput: 50}, 28},
		{"negative ignored", Tokens{Input: -5, Output: -1}, 0},
	} {
		p, _ := NewPriceTable(map[string]Price{"m": flash})
		pr, _ := p.Lookup("m")
		got, err := pr.Cost(tc.tok)
		if err != nil || got != tc.want {
			t.Errorf("%s: Cost = %d, %v; want %d", tc.name, got, err, tc.want)
		}
	}
}

func TestPriceCostOverflow(t *testing.T) {
	p := Price{Input: 1 << 62, Output: 1 << 62, CachedInput: 1, CacheWrite: 1}
	if _, err := p.Cost(Tokens{Input: 1 << 62, Output: 1 << 62}); err != ErrCostOverflow {
		t.Fatalf("want overflow, got %v", err)
	}
	// Large but representable: 10M tokens at 1000.00 per 1M.
	p = Price{Input: mustNanos(t, "1000"), Output: mustNanos(t, "1000"), CachedInput: 1, CacheWrite: 1}
	if got, err := p.Cost(Tokens{Input: 10_000_000}); err != nil || got != mustNanos(t, "10000") {
		t.Fatalf("big cost = %v, %v", got, err)
	}
}

func TestPriceTableLookup(t *testing.T) {
	tbl, err := NewPriceTable(map[string]Price{
		"gpt-4o*":      {Input: 1, Output: 1},
		"gpt-4o-mini*": {Input: 2, Output: 2},
		"gpt-4o-mini":  {Input: 3, Output: 3},
		"*":            {Input: 4, Output: 4},
	})
	if err != nil {
		t.Fatal(err)
	}
	for model, want := range map[string]Nanos{"gpt-4o-mini": 3, "gpt-4o-mini-2024": 2, "gpt-4o-2024": 1, "other": 4} {
		p, ok := tbl.Lookup(model)
		if !ok || p.Input != want {
			t.Errorf("Lookup(%q) = %v %v; want input %d", model, p, ok, want)
		}
	}
	empty, _ := NewPriceTable(map[string]Price{"a": {Input: 1, Output: 1}})
	if _, ok := empty.Lookup("b"); ok {
		t.Error("unpriced model found")
	}
	if p, _ := empty.Lookup("a"); p.CachedInput != 1 || p.CacheWrite != 1 {
		t.Errorf("defaults not filled: %+v", p)
	}
	if _, err := NewPriceTable(map[string]Price{"x": {Input: -1}}); err == nil {
		t.Error("negative price accepted")
	}
}
