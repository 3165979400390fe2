package meter

import (
	"bytes"
	"encoding/json"
)

// This file holds a small allocation-free walker over JSON held in memory.
// It finds member and element spans without decoding, so a stream chunk can
// be inspected without building maps or strings. It never panics on bad
// input; on valid JSON it is exact.

// skipWS returns the index of the first non-whitespace byte at or after i.
func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// trimWS returns b without surrounding JSON whitespace.
func trimWS(b []byte) []byte {
	b = b[skipWS(b, 0):]
	for len(b) > 0 {
		switch b[len(b)-1] {
		case ' ', '\t', '\r', '\n':
			b = b[:len(b)-1]
		default:
			return b
		}
	}
	return b
}

// stringEnd returns the index just past the string that starts with the
// quote at b[i], or -1 if it does not end.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j += 2 { // past a backslash and the byte it escapes
		j = plainEnd(b, j)
		if j == len(b) {
			return -1
		}
		if b[j] == '"' {
			return j + 1
		}
	}
	return -1
}

// valueEnd returns the index just past the JSON value that starts at b[i],
// or -1 if there is none.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := stringEnd(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	case ',', ':', '}', ']':
		return -1
	}
	j := i
	for j < len(b) {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return j
		}
		j++
	}
	return j
}

// objIter walks the members of one JSON object.
type objIter struct {
	b []byte
	i int
}

// members starts a walk over v, which must hold an object (after optional
// whitespace); ok is false otherwise.
func members(v []byte) (it objIter, ok bool) {
	i := skipWS(v, 0)
	if i >= len(v) || v[i] != '{' {
		return objIter{}, false
	}
	return objIter{b: v, i: i + 1}, true
}

// next returns the next member: its key as raw bytes between the quotes
// (escapes kept) and its value span. ok is false at the end or on bad input.
func (it *objIter) next() (key, val []byte, ok bool) {
	b := it.b
	i := skipWS(b, it.i)
	if i < len(b) && b[i] == ',' {
		i = skipWS(b, i+1)
	}
	key, vi := memberValue(b, i)
	ve := -1
	if vi >= 0 {
		ve = valueEnd(b, vi)
	}
	if ve < 0 {
		it.i = len(b)
		return nil, nil, false
	}
	it.i = ve
	return key, b[vi:ve], true
}

// arrIter walks the elements of one JSON array.
type arrIter struct {
	b []byte
	i int
}

// elements starts a walk over v, which must hold an array; ok is false
// otherwise.
func elements(v []byte) (it arrIter, ok bool) {
	i := skipWS(v, 0)
	if i >= len(v) || v[i] != '[' {
		return arrIter{}, false
	}
	return arrIter{b: v, i: i + 1}, true
}

// next returns the next element's span; ok is false at the end.
func (it *arrIter) next() (val []byte, ok bool) {
	b := it.b
	i := skipWS(b, it.i)
	if i < len(b) && b[i] == ',' {
		i = skipWS(b, i+1)
	}
	if i >= len(b) || b[i] == ']' {
		it.i = len(b)
		return nil, false
	}
	ve := valueEnd(b, i)
	if ve < 0 {
		it.i = len(b)
		return nil, false
	}
	it.i = ve
	return b[i:ve], true
}

// isNull reports whether v is absent or the JSON null.
func isNull(v []byte) bool {
	return len(v) == 0 || v[0] == 'n'
}

// isEmptyArray reports whether v is an array with no elements.
func isEmptyArray(v []byte) bool {
	it, ok := elements(v)
	if !ok {
		return false
	}
	_, more := it.next()
	return !more
}

// keyIs reports whether the raw key equals name once unescaped.
func keyIs(raw []byte, name string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw) == name
	}
	return unquote(raw) == name
}

// unquote decodes the raw content of a JSON string (without its quotes).
// It returns "" for content that is not a valid string.
func unquote(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw)
	}
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	var s string
	if json.Unmarshal(q, &s) != nil {
		return ""
	}
	return s
}

// stringChars counts the characters in the JSON string v (with its quotes):
// UTF-8 sequences and escapes each count as one; v that is not a string
// counts zero.
func stringChars(v []byte) int64 {
	if len(v) < 2 || v[0] != '"' {
		return 0
	}
	var c charCounter
	c.add(v[1 : len(v)-1])
	return c.n
}

// charCounter counts the characters of JSON string content fed to it in
// pieces: UTF-8 lead bytes (continuation bytes are skipped) and one per
// escape, a surrogate pair of \u escapes counting once. It needs no
// decoding and survives any split.
type charCounter struct {
	n    int64
	esc  bool  // the previous byte was a backslash
	uHex uint8 // hex digits of a \u escape still to read
	hex0 byte  // the first of them
}

func (c *charCounter) add(p []byte) {
	for _, b := range p {
		c.addByte(b)
	}
}

func (c *charCounter) addByte(b byte) {
	switch {
	case c.uHex > 0:
		c.uHex--
		switch c.uHex {
		case 3:
			c.hex0 = b
		case 2: // a low surrogate (DC00-DFFF) ends a pair already counted
			if (c.hex0 != 'd' && c.hex0 != 'D') || !(b >= 'c' && b <= 'f' || b >= 'C' && b <= 'F') {
				c.n++
			}
		}
	case c.esc:
		c.esc = false
		if b == 'u' {
			c.uHex = 4
		} else {
			c.n++
		}
	case b == '\\':
		c.esc = true
	case b&0xC0 != 0x80:
		c.n++
	}
}

// memberValue reads the key of the object member that starts at b[i], and
// the colon after it: it returns the raw key (escapes kept) and the index
// of the value, or vi = -1 when no member starts there.
func memberValue(b []byte, i int) (key []byte, vi int) {
	if i >= len(b) || b[i] != '"' {
		return nil, -1
	}
	ke := stringEnd(b, i)
	if ke < 0 {
		return nil, -1
	}
	j := skipWS(b, ke)
	if j >= len(b) || b[j] != ':' {
		return nil, -1
	}
	return b[i+1 : ke-1], skipWS(b, j+1)
}

// afterValue reads what follows a member or element that ends at b[e], in
// a container that closer ends: a comma, and then next is the start of
// the next one (more is set), or closer, and then next is just past it.
// next is -1 when neither follows.
func afterValue(b []byte, e int, closer byte) (next int, more bool) {
	i := skipWS(b, e)
	switch {
	case i >= len(b):
		return -1, false
	case b[i] == ',':
		return skipWS(b, i+1), true
	case b[i] == closer:
		return i + 1, false
	}
	return -1, false
}
