package money

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"strings"
)

// Price is what one million tokens of a model cost, in nanos of the
// configured currency.
type Price struct {
	// Input is the price of one million uncached input tokens.
	Input Nanos `json:"input"`
	// CachedInput is the price of one million input tokens served from the
	// provider's prompt cache. Default: Input.
	CachedInput Nanos `json:"cached_input,omitempty"`
	// CacheWrite is the price of one million input tokens written to an
	// Anthropic prompt cache. Default: Input.
	CacheWrite Nanos `json:"cache_write,omitempty"`
	// Output is the price of one million output tokens, reasoning included.
	Output Nanos `json:"output"`
}

// MaxPrice is the largest price of a million tokens: MaxNanos, so that a
// price is an amount like any other and Cost's 128-bit products cannot
// wrap for any token count.
const MaxPrice = MaxNanos

// Tokens are the billable token counts of one request. Input counts every
// input token, cached and cache writes included.
type Tokens struct {
	Input       int64
	CachedInput int64
	CacheWrite  int64
	Output      int64
}

// ErrCostOverflow reports a cost (or hold) above MaxNanos: more than any
// balance can pay.
var ErrCostOverflow = errors.New("cost exceeds the largest amount (9007199.254740991)")

// Cost prices t exactly: (uncached·input + cached·cached_input +
// cache_write·cache_write + output·output) / 10⁶, rounded up to a whole nano
// once. Negative counts are treated as zero; cached and cache-write counts
// are capped at Input. A cost above MaxNanos is ErrCostOverflow, as is a
// price outside [0, MaxNanos]. The products are taken in 128 bits: with
// prices ≤ MaxNanos (2⁵³) and counts ≤ 2⁶³ the sum stays below 2¹¹⁸, so
// nothing wraps, whatever an upstream reports.
func (p Price) Cost(t Tokens) (Nanos, error) {
	in, cached, write, out := nonNeg(t.Input), nonNeg(t.CachedInput), nonNeg(t.CacheWrite), nonNeg(t.Output)
	cached = min(cached, in)
	write = min(write, in-cached)
	uncached := in - cached - write
	var acc u128
	for _, term := range [...]struct {
		n uint64
		p Nanos
	}{{uncached, p.Input}, {cached, p.CachedInput}, {write, p.CacheWrite}, {out, p.Output}} {
		if term.p < 0 {
			return 0, fmt.Errorf("negative price")
		}
		if term.p > MaxNanos {
			return 0, ErrCostOverflow
		}
		acc = acc.add(mul64(term.n, uint64(term.p)))
	}
	if acc.hi >= 1_000_000 { // quotient would not fit in 64 bits
		return 0, ErrCostOverflow
	}
	q, r := bits.Div64(acc.hi, acc.lo, 1_000_000)
	if r != 0 {
		q++
	}
	if q > uint64(MaxNanos) {
		return 0, ErrCostOverflow
	}
	return Nanos(q), nil
}

// Hold is the amount reserved before forwarding a request: its estimated
// input at the input price and its largest possible output at the output
// price. A hold above MaxNanos is ErrCostOverflow: no balance covers it.
func (p Price) Hold(inputTokens, maxOutputTokens int64) (Nanos, error) {
	return p.Cost(Tokens{Input: inputTokens, Output: maxOutputTokens})
}

func nonNeg(v int64) uint64 {
	if v < 0 {
		return 0
	}
	return uint64(v)
}

type u128 struct{ hi, lo uint64 }

func mul64(a, b uint64) u128 {
	hi, lo := bits.Mul64(a, b)
	return u128{hi, lo}
}

func (x u128) add(y u128) u128 {
	lo, c := bits.Add64(x.lo, y.lo, 0)
	hi, _ := bits.Add64(x.hi, y.hi, c)
	return u128{hi, lo}
}

// PriceTable finds the price of a model: an exact name first, then the
// longest pattern ending in "*" whose prefix matches.
type PriceTable struct {
	exact    map[string]Price
	prefixes []prefixPrice // longest first
}

type prefixPrice struct {
	prefix string
	price  Price
}

// NewPriceTable builds a table from model patterns. It fills defaults
// (cached_input and cache_write default to input) and refuses empty
// patterns and prices outside [0, MaxNanos] (MaxPrice).
func NewPriceTable(prices map[string]Price) (*PriceTable, error) {
	t := &PriceTable{exact: make(map[string]Price, len(prices))}
	for pattern, p := range prices {
		if pattern == "" {
			return nil, fmt.Errorf("price: empty model name")
		}
		if p.Input < 0 || p.Output < 0 || p.CachedInput < 0 || p.CacheWrite < 0 {
			return nil, fmt.Errorf("price %s: prices must not be negative", pattern)
		}
		if p.Input > MaxPrice || p.Output > MaxPrice || p.CachedInput > MaxPrice || p.CacheWrite > MaxPrice {
			return nil, fmt.Errorf("price %s: prices must not exceed %s per million tokens", pattern, MaxPrice)
		}
		if p.CachedInput == 0 {
			p.CachedInput = p.Input
		}
		if p.CacheWrite == 0 {
			p.CacheWrite = p.Input
		}
		if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
			t.prefixes = append(t.prefixes, prefixPrice{prefix, p})
			continue
		}
		t.exact[pattern] = p
	}
	sort.Slice(t.prefixes, func(i, j int) bool {
		if len(t.prefixes[i].prefix) != len(t.prefixes[j].prefix) {
			return len(t.prefixes[i].prefix) > len(t.prefixes[j].prefix)
		}
		return t.prefixes[i].prefix < t.prefixes[j].prefix
	})
	return t, nil
}

// Lookup returns the price of model and whether it has one.
func (t *PriceTable) Lookup(model string) (Price, bool) {
	if t == nil {
		return Price{}, false
	}
	if p, ok := t.exact[model]; ok {
		return p, true
	}
	for _, pp := range t.prefixes {
		if strings.HasPrefix(model, pp.prefix) {
			return pp.price, true
		}
	}
	return Price{}, false
}

// Pattern returns the price table entry that prices model: model itself,
// or the "prefix*" pattern it matched; "" when none does. It names a
// model in metrics, where labels must come from the configuration, not
// from clients.
func (t *PriceTable) Pattern(model string) string {
	if t == nil {
		return ""
	}
	if _, ok := t.exact[model]; ok {
		return model
	}
	for _, pp := range t.prefixes {
		if strings.HasPrefix(model, pp.prefix) {
			return pp.prefix + "*"
		}
	}
	return ""
}
