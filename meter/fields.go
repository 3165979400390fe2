package meter

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file matches a request's top-level keys as every upstream decoder
// could (exactly, unescaped, or in another letter case) and reads the
// billing fields with their strict JSON types.

// plainKey reports whether the raw key k needs no unescaping and has no
// upper-case or non-ASCII byte: then only an exact match can name a field.
func plainKey(k []byte) bool {
	for _, c := range k {
		if c == '\\' || c >= utf8.RuneSelf || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// slowField matches a key that is not plain: exactly, once unescaped, or
// as a case variant of a field's name, which is an error.
func slowField(raw []byte) (field, bool, error) {
	k := unescapeKey(raw)
	if fd, ok := lookupField(k); ok {
		return fd, true, nil
	}
	for _, name := range fieldNames {
		if foldsTo(k, name) {
			return 0, false, caseError(name, k)
		}
	}
	return 0, false, nil
}

// unescapeKey returns the raw key (or string content) unescaped; raw itself
// when it has no escape.
func unescapeKey(raw []byte) []byte {
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	return []byte(unquote(raw))
}

// caseError refuses the key k, a case variant of name.
func caseError(name string, k []byte) error {
	return &FieldError{Field: name, Reason: "also given as " + quoteShort(k) + ", which differs only in letter case"}
}

// matchKey compares a raw member key with name (lower-case ASCII letters
// and '_'): exact is true when it is name once unescaped, variant when it
// differs from name only in letter case.
func matchKey(raw []byte, name string) (exact, variant bool) {
	if plainKey(raw) {
		return string(raw) == name, false
	}
	k := unescapeKey(raw)
	if string(k) == name {
		return true, false
	}
	return false, foldsTo(k, name)
}

// foldsTo reports whether the unescaped key k differs from name (lower-case
// ASCII letters and '_') only in letter case, as any decoder that matches
// keys regardless of case could take it: each rune of k is name's byte,
// its upper case, or one of the four non-ASCII runes that case mappings
// take to an ASCII letter (ſ U+017F to s, the Kelvin sign U+212A to k,
// İ U+0130 and ı U+0131 to i). This covers bytes.EqualFold and Go's
// encoding/json (Unicode simple folding) and upper-casing decoders.
func foldsTo(k []byte, name string) bool {
	if len(k) < len(name) || len(k) > 3*len(name) {
		return false
	}
	i := 0
	for j := 0; j < len(name); j++ {
		if i >= len(k) {
			return false
		}
		c, b := name[j], k[i]
		if b < utf8.RuneSelf {
			if b != c && (c < 'a' || c > 'z' || b != c-('a'-'A')) {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(k[i:])
		i += size
		switch {
		case r == '\u017f' && c == 's', r == '\u212a' && c == 'k', (r == '\u0130' || r == '\u0131') && c == 'i':
		default:
			return false
		}
	}
	return i == len(k)
}

// quoteShort quotes a client's string for an error message, cut to 64
// bytes.
func quoteShort(s []byte) string {
	if len(s) > 64 {
		return strconv.Quote(string(s[:64])) + "..."
	}
	return strconv.Quote(string(s))
}

// readModel reads the model member v.
func readModel(v []byte) (string, error) {
	if len(v) < 2 || v[0] != '"' {
		return "", ErrMissingModel
	}
	m := unquote(v[1 : len(v)-1])
	if m == "" {
		return "", ErrMissingModel
	}
	// Decoders disagree on invalid UTF-8 and lone surrogates (replaced,
	// refused, or kept): refuse them.
	if !utf8.ValidString(m) || strings.ContainsRune(m, utf8.RuneError) {
		return "", &FieldError{Field: "model", Reason: "must be valid UTF-8 text"}
	}
	return m, nil
}

// readBool reads a member that must be true, false or null (or absent).
func readBool(v []byte) (val, ok bool) {
	switch string(v) {
	case "true":
		return true, true
	case "", "false", "null":
		return false, true
	}
	return false, false
}

// readInt reads a member that must be null (or absent, both giving 0) or an
// integer in [lo, hi] written with digits only (no sign, fraction or
// exponent).
func readInt(v []byte, lo, hi int64) (int64, bool) {
	if isNull(v) {
		return 0, true
	}
	if len(v) > 10 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, lo <= n && n <= hi
}

// readStreamOptions checks the stream_options member v and reports whether
// it asks for usage.
func readStreamOptions(v []byte) (includeUsage bool, err error) {
	if isNull(v) {
		return false, nil
	}
	it, ok := members(v)
	if !ok {
		return false, &FieldError{Field: "stream_options", Reason: "must be an object or null"}
	}
	const field = "stream_options.include_usage"
	seen := false
	for {
		k, val, more := it.next()
		if !more {
			return includeUsage, nil
		}
		exact, variant := matchKey(k, "include_usage")
		switch {
		case variant:
			return false, &FieldError{Field: field, Reason: "also given as " + quoteShort(unescapeKey(k)) + ", which differs only in letter case"}
		case !exact:
			continue
		case seen:
			return false, &FieldError{Field: field, Reason: "given twice"}
		}
		seen = true
		if includeUsage, ok = readBool(val); !ok {
			return false, &FieldError{Field: field, Reason: "must be true, false or null"}
		}
	}
}

// withIncludeUsage returns the stream_options value v with include_usage
// set to true and its other members kept in order. A v that is not an
// object is replaced.
func withIncludeUsage(v []byte) []byte {
	out := []byte(`{"include_usage":true`)
	it, ok := members(v)
	if !ok {
		return append(out, '}')
	}
	for {
		k, val, more := it.next()
		if !more {
			break
		}
		if keyIs(k, "include_usage") {
			continue
		}
		out = append(out, ',', '"')
		out = append(out, k...)
		out = append(out, '"', ':')
		out = append(out, val...)
	}
	return append(out, '}')
}

// promptCount is how many prompts a completions request's prompt value v
// holds: the upstream generates n (best_of) completions for each. A string,
// a single array of token numbers, an empty array or no prompt is one; an
// array holding anything other than numbers counts every element, which is
// at least as many prompts as any reading of it gives (the API takes an
// array of strings or an array of token arrays). ok is false above
// MaxPrompts.
func promptCount(v []byte) (n int64, ok bool) {
	it, isArray := elements(v)
	if !isArray {
		return 1, true
	}
	numbers := true
	for {
		e, more := it.next()
		if !more {
			break
		}
		n++
		numbers = numbers && (e[0] == '-' || isDigit(e[0]))
	}
	if numbers || n == 0 {
		return 1, true
	}
	return n, n <= MaxPrompts
}
