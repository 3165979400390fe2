package usagelog

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// decodeRecord reads a Record from JSON with the result and errors of
// encoding/json, several times faster for the shape producers write: a flat
// object with the known keys, plain strings and integers. Decoding is a
// large share of a flush, so this matters for the ledger's throughput.
// Anything else (escapes, nulls, unknown or differently cased keys, floats)
// is left to encoding/json; FuzzDecodeRecord checks the two agree.
func decodeRecord(raw string) (Record, error) {
	if r, ok := fastDecode(raw); ok {
		return r, nil
	}
	var r Record
	err := json.Unmarshal([]byte(raw), &r)
	return r, err
}

func fastDecode(raw string) (Record, bool) {
	if !gjson.Valid(raw) {
		return Record{}, false
	}
	obj := gjson.Parse(raw)
	if !obj.IsObject() {
		return Record{}, false
	}
	var r Record
	ok := true
	obj.ForEach(func(k, v gjson.Result) bool {
		ok = !strings.Contains(k.Raw, `\`) && r.set(k.Str, v)
		return ok
	})
	return r, ok
}

// set stores v in the field named by key and reports whether it could do
// so exactly as encoding/json would.
func (r *Record) set(key string, v gjson.Result) bool {
	switch key {
	case "request_id":
		return plainString(v, &r.RequestID)
	case "time":
		var s string
		return plainString(v, &s) && r.Time.UnmarshalText([]byte(s)) == nil
	case "user":
		return plainString(v, &r.User)
	case "key_id":
		return plainString(v, &r.KeyID)
	case "model":
		return plainString(v, &r.Model)
	case "endpoint":
		return plainString(v, &r.Endpoint)
	case "stream":
		return boolean(v, &r.Stream)
	case "status":
		var n int64
		if !integer(v, &n) || int64(int(n)) != n {
			return false
		}
		r.Status = int(n)
		return true
	case "outcome":
		return plainString(v, &r.Outcome)
	case "input_tokens":
		return integer(v, &r.InputTokens)
	case "cached_input_tokens":
		return integer(v, &r.CachedInputTokens)
	case "cache_write_tokens":
		return integer(v, &r.CacheWriteTokens)
	case "output_tokens":
		return integer(v, &r.OutputTokens)
	case "reasoning_tokens":
		return integer(v, &r.ReasoningTokens)
	case "cost":
		// encoding/json hands a Unmarshaler the raw value, quotes included.
		return (v.Type == gjson.String || v.Type == gjson.Number) && r.Cost.UnmarshalJSON([]byte(v.Raw)) == nil
	case "currency":
		return plainString(v, &r.Currency)
	case "estimated":
		return boolean(v, &r.Estimated)
	case "usage_clamped":
		return boolean(v, &r.Clamped)
	case "duration_ms":
		return integer(v, &r.DurationMS)
	case "ttft_ms":
		return integer(v, &r.TTFTMS)
	case "client_ip":
		return plainString(v, &r.ClientIP)
	}
	return false
}

// plainString accepts a string without escapes in valid UTF-8, whose value
// is its raw text.
func plainString(v gjson.Result, dst *string) bool {
	if v.Type != gjson.String || strings.Contains(v.Raw, `\`) || !utf8.ValidString(v.Str) {
		return false
	}
	*dst = v.Str
	return true
}

func integer(v gjson.Result, dst *int64) bool {
	if v.Type != gjson.Number {
		return false
	}
	n, err := strconv.ParseInt(v.Raw, 10, 64)
	if err != nil {
		return false
	}
	*dst = n
	return true
}

func boolean(v gjson.Result, dst *bool) bool {
	switch v.Type {
	case gjson.True:
		*dst = true
	case gjson.False:
		*dst = false
	default:
		return false
	}
	return true
}
