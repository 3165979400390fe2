package meter

import (
	"bytes"
	"math"
	"strconv"
)

// Usage is the token count of one response. InputTokens includes cached and
// cache-write tokens.
type Usage struct {
	// InputTokens is every input token: OpenAI prompt_tokens, DeepSeek
	// hit+miss, Anthropic input+cache_creation+cache_read, Responses
	// input_tokens.
	InputTokens int64
	// CachedInputTokens is the cache hits among InputTokens: OpenAI
	// prompt_tokens_details.cached_tokens or input_tokens_details.cached_tokens,
	// DeepSeek prompt_cache_hit_tokens (preferred when present), Anthropic
	// cache_read_input_tokens. Never more than InputTokens.
	CachedInputTokens int64
	// CacheWriteTokens is Anthropic cache_creation_input_tokens, a part of
	// InputTokens.
	CacheWriteTokens int64
	// OutputTokens is every output token, reasoning included
	// (completion_tokens / output_tokens).
	OutputTokens int64
	// ReasoningTokens is the reasoning part of OutputTokens
	// (completion_tokens_details.reasoning_tokens /
	// output_tokens_details.reasoning_tokens). Never more than OutputTokens.
	ReasoningTokens int64
}

// maxCount caps one reported token count, so that sums and prices of
// absurd reports cannot overflow an int64.
const maxCount = 1 << 40

// optInt is a token count that may be absent.
type optInt struct {
	v  int64
	ok bool
}

// or returns o when present and else alt.
func (o optInt) or(alt optInt) optInt {
	if o.ok {
		return o
	}
	return alt
}

// wireUsage holds every usage field any supported format reports, as sent.
// One decoder reads them all; Usage maps them by format.
type wireUsage struct {
	prompt, completion, hit, miss, promptCached, reasoning optInt // OpenAI chat, DeepSeek
	input, output, inputCached, outputReasoning            optInt // Responses, Anthropic
	cacheCreation, cacheRead                               optInt // Anthropic
}

// decodeUsage reads a usage object; ok is false when v is null or not an
// object. Unknown fields are ignored, and a field that is null or not a
// count ([parseUsageCount]) is absent. Keys are matched unescaped and the
// last of duplicates wins, as in the upstreams' clients.
func decodeUsage(v []byte) (u wireUsage, ok bool) {
	it, ok := members(v)
	if !ok {
		return u, false
	}
	for {
		k, val, more := it.next()
		if !more {
			return u, true
		}
		if bytes.IndexByte(k, '\\') >= 0 {
			k = []byte(unquote(k))
		}
		switch string(k) {
		case "prompt_tokens":
			u.prompt = parseUsageCount(val)
		case "completion_tokens":
			u.completion = parseUsageCount(val)
		case "prompt_cache_hit_tokens":
			u.hit = parseUsageCount(val)
		case "prompt_cache_miss_tokens":
			u.miss = parseUsageCount(val)
		case "prompt_tokens_details":
			u.promptCached = detail(val, "cached_tokens")
		case "completion_tokens_details":
			u.reasoning = detail(val, "reasoning_tokens")
		case "input_tokens":
			u.input = parseUsageCount(val)
		case "output_tokens":
			u.output = parseUsageCount(val)
		case "input_tokens_details":
			u.inputCached = detail(val, "cached_tokens")
		case "output_tokens_details":
			u.outputReasoning = detail(val, "reasoning_tokens")
		case "cache_creation_input_tokens":
			u.cacheCreation = parseUsageCount(val)
		case "cache_read_input_tokens":
			u.cacheRead = parseUsageCount(val)
		}
	}
}

// detail reads one count from a details object such as
// prompt_tokens_details.
func detail(v []byte, name string) optInt {
	it, ok := members(v)
	if !ok {
		return optInt{}
	}
	var c optInt
	for {
		k, val, more := it.next()
		if !more {
			return c
		}
		if keyIs(k, name) {
			c = parseUsageCount(val)
		}
	}
}

// parseCount reads a JSON number as a token count, clamped to
// [0, maxCount]. Fractions are truncated. Null and non-numbers are absent.
// It reads request fields; usage reports use the stricter parseUsageCount.
func parseCount(v []byte) optInt {
	if len(v) == 0 {
		return optInt{}
	}
	if v[0] == '-' {
		if len(v) > 1 && v[1] >= '0' && v[1] <= '9' {
			return optInt{0, true}
		}
		return optInt{}
	}
	var n int64
	for i, c := range v {
		if c < '0' || c > '9' {
			if i == 0 {
				return optInt{}
			}
			return parseFloatCount(v)
		}
		if n < maxCount {
			n = n*10 + int64(c-'0')
		}
	}
	return optInt{min(n, maxCount), true}
}

// parseFloatCount is parseCount's slow path for numbers like 12.0 or 1e3.
func parseFloatCount(v []byte) optInt {
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || f != f {
		return optInt{}
	}
	switch {
	case f < 0:
		return optInt{0, true}
	case f >= maxCount:
		return optInt{maxCount, true}
	}
	return optInt{int64(f), true}
}

// parseUsageCount reads a reported token count: a JSON number whose value
// is a non-negative integer (12, also 12.0 or 1.2e1), clamped to maxCount.
// Anything else (negative, fractional, a string, null, an object) is
// absent: an upstream's count is trusted no further than its form.
func parseUsageCount(v []byte) optInt {
	if len(v) == 0 || v[0] < '0' || v[0] > '9' {
		return optInt{}
	}
	var n int64
	for i, c := range v {
		if c < '0' || c > '9' {
			return parseFloatUsage(v[i:], v)
		}
		if n < maxCount {
			n = n*10 + int64(c-'0')
		}
	}
	return optInt{min(n, maxCount), true}
}

// parseFloatUsage is parseUsageCount's slow path for a number v whose
// integer digits are followed by rest, such as 12.0 or 1e3.
func parseFloatUsage(rest, v []byte) optInt {
	for _, c := range rest { // JSON's fraction and exponent only: no hex, no '_'
		if !(c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
			return optInt{}
		}
	}
	f, err := strconv.ParseFloat(string(v), 64)
	switch {
	case math.IsInf(f, 1) || err == nil && f >= maxCount:
		return optInt{maxCount, true}
	case err != nil || f != math.Trunc(f):
		return optInt{}
	}
	return optInt{int64(f), true}
}

// overlay copies the fields present in n over u (Anthropic's cumulative
// message_delta usage: overwrite, never add).
func (u *wireUsage) overlay(n *wireUsage) {
	set := func(dst *optInt, src optInt) {
		if src.ok {
			*dst = src
		}
	}
	set(&u.prompt, n.prompt)
	set(&u.completion, n.completion)
	set(&u.hit, n.hit)
	set(&u.miss, n.miss)
	set(&u.promptCached, n.promptCached)
	set(&u.reasoning, n.reasoning)
	set(&u.input, n.input)
	set(&u.output, n.output)
	set(&u.inputCached, n.inputCached)
	set(&u.outputReasoning, n.outputReasoning)
	set(&u.cacheCreation, n.cacheCreation)
	set(&u.cacheRead, n.cacheRead)
}

// complete reports whether u is a usage report for format f: it has the
// input count and, except for embeddings, the output count that usage(f)
// reads. Without them an object such as {} or {"total_tokens":9} would
// bill nothing as if it were exact.
func (u *wireUsage) complete(f Format) bool {
	switch f {
	case FormatMessages:
		return u.input.ok && (u.output.ok || u.completion.ok)
	case FormatResponses:
		return (u.input.ok || u.prompt.ok) && (u.output.ok || u.completion.ok)
	case FormatEmbeddings:
		return u.prompt.ok || u.hit.ok && u.miss.ok || u.input.ok
	}
	return (u.prompt.ok || u.hit.ok && u.miss.ok || u.input.ok) && (u.completion.ok || u.output.ok)
}

// usage normalises the wire fields for format f.
func (u *wireUsage) usage(f Format) Usage {
	var r Usage
	switch f {
	case FormatMessages:
		r.CacheWriteTokens = u.cacheCreation.v
		r.CachedInputTokens = u.cacheRead.v
		r.InputTokens = u.input.v + u.cacheCreation.v + u.cacheRead.v
		r.OutputTokens = u.output.or(u.completion).v
	case FormatResponses:
		r.InputTokens = u.input.or(u.prompt).v
		r.CachedInputTokens = u.inputCached.or(u.promptCached).v
		r.OutputTokens = u.output.or(u.completion).v
		r.ReasoningTokens = u.outputReasoning.or(u.reasoning).v
	default: // OpenAI chat, completions and embeddings; DeepSeek
		switch {
		case u.prompt.ok:
			r.InputTokens = u.prompt.v
		case u.hit.ok || u.miss.ok:
			r.InputTokens = u.hit.v + u.miss.v
		default:
			r.InputTokens = u.input.v
		}
		r.CachedInputTokens = u.hit.or(u.promptCached).or(u.inputCached).v
		r.OutputTokens = u.completion.or(u.output).v
		r.ReasoningTokens = u.reasoning.or(u.outputReasoning).v
	}
	// Subsets never exceed their totals, so (input - cached) stays >= 0.
	r.CachedInputTokens = min(r.CachedInputTokens, r.InputTokens)
	r.CacheWriteTokens = min(r.CacheWriteTokens, r.InputTokens-r.CachedInputTokens)
	r.ReasoningTokens = min(r.ReasoningTokens, r.OutputTokens)
	return r
}
