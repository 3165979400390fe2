package meter

import "encoding/binary"

// validJSON reports whether b is one valid JSON value exactly when
// encoding/json.Valid does: the same grammar, the same whitespace, bytes
// of any value (invalid UTF-8 included) inside strings but no control
// characters, and the same bound on nesting. It is one pass over b with no
// allocation, under half json.Valid's time on a typical request body (it
// checks every metered one). FuzzValidJSON holds it to json.Valid.
func validJSON(b []byte) bool {
	// open has bit d%64 of word d/64 set when the container at depth d
	// (1-based) is an object, clear when it is an array.
	var open [maxNesting/64 + 1]uint64
	depth := 0
	i := skipWS(b, 0)
	for {
		// A value starts at b[i].
		if i >= len(b) {
			return false
		}
		switch c := b[i]; c {
		case '{', '[':
			if depth++; depth > maxNesting {
				return false
			}
			if c == '{' {
				open[depth/64] |= 1 << (depth % 64)
			} else {
				open[depth/64] &^= 1 << (depth % 64)
			}
			i = skipWS(b, i+1)
			if i < len(b) && b[i] == c+2 { // '}' or ']': empty
				i++
				depth--
				break
			}
			if c == '{' {
				if i = memberKey(b, i); i < 0 {
					return false
				}
			}
			continue // its first value
		case '"':
			i = stringTail(b, i+1)
		case 't':
			i = literal(b, i, "true")
		case 'f':
			i = literal(b, i, "false")
		case 'n':
			i = literal(b, i, "null")
		default:
			i = number(b, i)
		}
		if i < 0 {
			return false
		}
		// After a value: close containers, or go on to the next value.
		for {
			i = skipWS(b, i)
			if depth == 0 {
				return i == len(b)
			}
			if i >= len(b) {
				return false
			}
			inObject := open[depth/64]&(1<<(depth%64)) != 0
			switch b[i] {
			case ',':
				i = skipWS(b, i+1)
				if inObject {
					if i = memberKey(b, i); i < 0 {
						return false
					}
				}
			case '}', ']':
				if (b[i] == '}') != inObject {
					return false
				}
				i++
				depth--
				continue
			default:
				return false
			}
			break
		}
	}
}

// maxNesting is encoding/json's bound on nested arrays and objects.
const maxNesting = 10000

// memberKey reads `"key" :` from b[i] and returns the index of what follows
// the colon and its whitespace, or -1.
func memberKey(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	if i = stringTail(b, i+1); i < 0 {
		return -1
	}
	if i = skipWS(b, i); i >= len(b) || b[i] != ':' {
		return -1
	}
	return skipWS(b, i+1)
}

// stringTail reads a string's content and closing quote from b[i] and
// returns the index after the quote, or -1.
func stringTail(b []byte, i int) int {
	for {
		if i = stringRun(b, i); i >= len(b) {
			return -1
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			if i+1 >= len(b) {
				return -1
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return -1
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex(h) {
						return -1
					}
				}
				i += 6
			default:
				return -1
			}
		default: // a control character
			return -1
		}
	}
}

// stringRun returns the index of the first byte at or after i in b that
// plainInString does not hold (len(b) if none), looking at 8 bytes at a
// time.
func stringRun(b []byte, i int) int {
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		if m := bytesEqual(w, '"') | bytesEqual(w, '\\') | bytesBelow(w, 0x20); m != 0 {
			return i + firstMarked(m)
		}
	}
	for i < len(b) && plainInString[b[i]] {
		i++
	}
	return i
}

// plainInString marks the bytes a string holds as they are: all but the
// quote, the backslash and control characters.
var plainInString = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// literal reads word (true, false or null) at b[i] and returns the index
// after it, or -1.
func literal(b []byte, i int, word string) int {
	if len(b)-i < len(word) || string(b[i:i+len(word)]) != word {
		return -1
	}
	return i + len(word)
}

// number reads a JSON number at b[i] and returns the index after it, or -1:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func number(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return -1
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		if i+1 >= len(b) || !isDigit(b[i+1]) {
			return -1
		}
		i = digits(b, i+1)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return -1
		}
		i = digits(b, i)
	}
	return i
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// digits returns the index of the first byte from b[i] on that is not a
// digit.
func digits(b []byte, i int) int {
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	return i
}
