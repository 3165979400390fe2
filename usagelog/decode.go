package usagelog

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decodeRecord reads a Record from JSON into r, with the result and errors of
// encoding/json, several times faster for the shape producers write: a flat
// object with the known keys, plain strings and integers. Decoding is a
// large share of a flush, so this matters for the ledger's throughput.
// Anything else (escapes, nulls, nested values, unknown or differently
// cased keys, floats where integers go) is left to encoding/json;
// FuzzDecodeRecord checks the two agree.
func decodeRecord(raw string, r *Record) error {
	if fastDecode(raw, r) {
		return nil
	}
	*r = Record{} // encoding/json would merge into what r holds
	return json.Unmarshal([]byte(raw), r)
}

// fastDecode reads raw into r in one pass if it is a JSON object whose
// keys are Record's exact names and whose values are strings without
// escapes, numbers or booleans, and every value fits its field as
// encoding/json would put it there. Otherwise it reports false, with r
// partly set. (The records are filled in place: a Record handed to the
// field setters, which are called through a table, would escape.)
func fastDecode(raw string, r *Record) bool {
	if decodeInOrder(raw, r) {
		return true
	}
	// decodeInOrder zeroed r; what it set before giving up is set again
	// below, from the same keys.
	i := skipSpace(raw, 0)
	if i == len(raw) || raw[i] != '{' {
		return false
	}
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return skipSpace(raw, i+1) == len(raw)
	}
	for {
		key, j, ok := scanValue(raw, i)
		if !ok || key.kind != '"' {
			return false
		}
		i = skipSpace(raw, j)
		if i == len(raw) || raw[i] != ':' {
			return false
		}
		v, j, ok := scanValue(raw, skipSpace(raw, i+1))
		if !ok || !r.set(key.text, v) {
			return false
		}
		i = skipSpace(raw, j)
		if i == len(raw) {
			return false
		}
		switch raw[i] {
		case ',':
			i = skipSpace(raw, i+1)
		case '}':
			return skipSpace(raw, i+1) == len(raw)
		default:
			return false
		}
	}
}

// jsonValue is a scalar JSON value as it appears in the input.
type jsonValue struct {
	kind  byte   // '"' string, '0' number, 't' true, 'f' false
	raw   string // the value's text, quotes included
	text  string // a string's content (it has no escapes), a number's text
	ascii bool   // the string is all ASCII, so valid UTF-8
}

// plainASCII holds the bytes a string can hold as they are, ASCII only: all
// but the quote, the backslash and control characters.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// skipSpace returns the index of the first byte at or after i in s that is
// not JSON whitespace.
func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r') {
		i++
	}
	return i
}

// scanValue reads the scalar value that starts at s[i] and returns it with
// the index just after it. It reports false for anything it does not take:
// a string with an escape or a control character, a malformed number,
// null, an object or an array.
func scanValue(s string, i int) (jsonValue, int, bool) {
	if i == len(s) {
		return jsonValue{}, i, false
	}
	start := i
	switch c := s[i]; {
	case c == '"':
		ascii := true
		for i++; i < len(s); i++ {
			if plainASCII[s[i]] {
				continue
			}
			switch c := s[i]; {
			case c == '"':
				return jsonValue{kind: '"', raw: s[start : i+1], text: s[start+1 : i], ascii: ascii}, i + 1, true
			case c == '\\' || c < 0x20:
				return jsonValue{}, i, false
			default:
				ascii = false
			}
		}
		return jsonValue{}, i, false
	case c == '-' || '0' <= c && c <= '9':
		end, ok := scanNumber(s, i)
		return jsonValue{kind: '0', raw: s[start:end], text: s[start:end]}, end, ok
	case c == 't' && strings.HasPrefix(s[i:], "true"):
		return jsonValue{kind: 't', raw: s[i : i+4]}, i + 4, true
	case c == 'f' && strings.HasPrefix(s[i:], "false"):
		return jsonValue{kind: 'f', raw: s[i : i+5]}, i + 5, true
	}
	return jsonValue{}, i, false
}

// scanNumber returns the index just after the JSON number that starts at
// s[i], and false if there is none: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(s string, i int) (int, bool) {
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && '1' <= s[i] && s[i] <= '9':
		i = digits(s, i)
	default:
		return i, false
	}
	if i < len(s) && s[i] == '.' {
		j := digits(s, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := digits(s, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

// digits returns the index of the first byte at or after i in s that is
// not an ASCII digit.
func digits(s string, i int) int {
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	return i
}

// set stores v in the field named by key and reports whether it could do
// so exactly as encoding/json would.
func (r *Record) set(key string, v jsonValue) bool {
	for i := range recordFields {
		if f := &recordFields[i]; f.name == key {
			return f.set(r, v)
		}
	}
	return false
}

// recordField is a key of a Record's JSON, and how its value is stored.
type recordField struct {
	name string
	// lit is the key as AppendJSON writes it: quoted, with the colon.
	lit string
	// optional is set for a key AppendJSON leaves out at its zero value.
	optional bool
	set      func(r *Record, v jsonValue) bool
}

// recordFields are Record's JSON keys in the order AppendJSON writes them.
var recordFields = [...]recordField{
	field("request_id", false, func(r *Record, v jsonValue) bool { return plainString(v, &r.RequestID) }),
	field("time", false, func(r *Record, v jsonValue) bool {
		var s string
		return plainString(v, &s) && r.Time.UnmarshalText([]byte(s)) == nil
	}),
	field("user", false, func(r *Record, v jsonValue) bool { return plainString(v, &r.User) }),
	field("key_id", false, func(r *Record, v jsonValue) bool { return plainString(v, &r.KeyID) }),
	field("model", false, func(r *Record, v jsonValue) bool { return plainString(v, &r.Model) }),
	field("endpoint", false, func(r *Record, v jsonValue) bool { return plainString(v, &r.Endpoint) }),
	field("stream", false, func(r *Record, v jsonValue) bool { return boolean(v, &r.Stream) }),
	field("status", false, func(r *Record, v jsonValue) bool {
		var n int64
		if !integer(v, &n) || int64(int(n)) != n {
			return false
		}
		r.Status = int(n)
		return true
	}),
	field("outcome", false, func(r *Record, v jsonValue) bool { return plainString(v, &r.Outcome) }),
	field("input_tokens", false, func(r *Record, v jsonValue) bool { return integer(v, &r.InputTokens) }),
	field("cached_input_tokens", false, func(r *Record, v jsonValue) bool { return integer(v, &r.CachedInputTokens) }),
	field("cache_write_tokens", true, func(r *Record, v jsonValue) bool { return integer(v, &r.CacheWriteTokens) }),
	field("output_tokens", false, func(r *Record, v jsonValue) bool { return integer(v, &r.OutputTokens) }),
	field("reasoning_tokens", false, func(r *Record, v jsonValue) bool { return integer(v, &r.ReasoningTokens) }),
	field("cost", false, func(r *Record, v jsonValue) bool {
		// encoding/json hands a Unmarshaler the raw value, quotes included.
		return (v.kind == '"' || v.kind == '0') && r.Cost.UnmarshalJSON([]byte(v.raw)) == nil
	}),
	field("currency", false, func(r *Record, v jsonValue) bool { return plainString(v, &r.Currency) }),
	field("estimated", false, func(r *Record, v jsonValue) bool { return boolean(v, &r.Estimated) }),
	field("usage_clamped", true, func(r *Record, v jsonValue) bool { return boolean(v, &r.Clamped) }),
	field("duration_ms", false, func(r *Record, v jsonValue) bool { return integer(v, &r.DurationMS) }),
	field("ttft_ms", false, func(r *Record, v jsonValue) bool { return integer(v, &r.TTFTMS) }),
	field("client_ip", false, func(r *Record, v jsonValue) bool { return plainString(v, &r.ClientIP) }),
}

func field(name string, optional bool, set func(*Record, jsonValue) bool) recordField {
	return recordField{name: name, lit: `"` + name + `":`, optional: optional, set: set}
}

// decodeInOrder reads raw into r if it is exactly what AppendJSON writes: every
// key in recordFields' order, with no whitespace, and values fastDecode
// takes. It skips the search for each key's field; anything else (another
// order, spaces, a key missing or unknown) reports false.
func decodeInOrder(raw string, r *Record) bool {
	*r = Record{}
	if len(raw) < 2 || raw[0] != '{' {
		return false
	}
	i, sep := 1, byte('{')
	for k := range recordFields {
		f := &recordFields[k]
		if !strings.HasPrefix(raw[i:], f.lit) {
			if f.optional {
				continue
			}
			return false
		}
		v, j, ok := scanValue(raw, i+len(f.lit))
		if !ok || !f.set(r, v) || j == len(raw) {
			return false
		}
		sep = raw[j]
		if sep != ',' {
			i = j
			break
		}
		i = j + 1
	}
	return sep == '}' && i == len(raw)-1
}

// plainString accepts a string (scanValue took it: no escapes) in valid
// UTF-8, whose value is its raw text.
func plainString(v jsonValue, dst *string) bool {
	if v.kind != '"' || !v.ascii && !utf8.ValidString(v.text) {
		return false
	}
	*dst = v.text
	return true
}

func integer(v jsonValue, dst *int64) bool {
	if v.kind != '0' {
		return false
	}
	if n, ok := smallInt(v.text); ok {
		*dst = n
		return true
	}
	n, err := strconv.ParseInt(v.text, 10, 64)
	if err != nil {
		return false
	}
	*dst = n
	return true
}

// smallInt reads s if it is an optional minus and 1 to 18 digits (no
// int64 overflows in those), as strconv.ParseInt would; anything else is
// left to ParseInt.
func smallInt(s string) (int64, bool) {
	neg := len(s) > 0 && s[0] == '-'
	d := s
	if neg {
		d = s[1:]
	}
	if len(d) == 0 || len(d) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(d); i++ {
		c := d[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

func boolean(v jsonValue, dst *bool) bool {
	switch v.kind {
	case 't':
		*dst = true
	case 'f':
		*dst = false
	default:
		return false
	}
	return true
}
