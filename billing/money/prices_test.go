package money

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

// Prices are bounded (MaxPrice) when the table is built, and a cost or a
// hold above MaxNanos is refused, whatever token counts are claimed.
func TestPriceBounds(t *testing.T) {
	if _, err := NewPriceTable(map[string]Price{"x": {Input: MaxPrice, Output: MaxPrice}}); err != nil {
		t.Errorf("MaxPrice refused: %v", err)
	}
	for _, p := range []Price{{Input: MaxPrice + 1}, {Output: MaxPrice + 1}, {Input: 1, CachedInput: 1 << 62}, {Input: 1, CacheWrite: MaxPrice + 1}} {
		if _, err := NewPriceTable(map[string]Price{"x": p}); err == nil {
			t.Errorf("price %+v accepted", p)
		}
	}
	const maxCount = 1 << 40 // the meter's cap on one reported count
	p := Price{Input: MaxPrice, CachedInput: MaxPrice, CacheWrite: MaxPrice, Output: MaxPrice}
	for _, tok := range []Tokens{
		{Input: maxCount, Output: maxCount},
		{Input: 1<<63 - 1, CachedInput: 1<<63 - 1, CacheWrite: 1<<63 - 1, Output: 1<<63 - 1},
		{Input: 1_000_001}, // just over MaxNanos at MaxPrice
	} {
		if c, err := p.Cost(tok); err != ErrCostOverflow {
			t.Errorf("Cost(%+v) = %d, %v; want ErrCostOverflow", tok, c, err)
		}
	}
	if c, err := p.Cost(Tokens{Input: 1_000_000}); err != nil || c != MaxNanos {
		t.Errorf("Cost of a million tokens at MaxPrice = %d, %v", c, err)
	}
	// A price the table would refuse is refused by Cost too.
	if _, err := (Price{Output: MaxPrice + 1}).Cost(Tokens{Output: 1}); err != ErrCostOverflow {
		t.Errorf("Cost with a price over MaxPrice: %v", err)
	}
	// Largest realistic cost: 2^40 tokens each way at 1000 per million.
	q := Price{Input: 1000 * NanosPerUnit, Output: 1000 * NanosPerUnit}
	if _, err := q.Hold(maxCount, maxCount); err != ErrCostOverflow {
		t.Errorf("Hold over MaxNanos: %v", err)
	}
	if c, err := q.Cost(Tokens{Input: 4_000_000_000}); err != nil || c != 4_000_000*NanosPerUnit || !c.InRange() {
		t.Errorf("Cost = %d, %v", c, err)
	}
}
