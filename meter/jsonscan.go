package meter

import (
	"bytes"
	"encoding/binary"
)

// jsonScanner follows a JSON response body as it passes, without keeping
// it: it tracks strings, escapes and nesting, recognises the top-level keys,
// copies only the value of the top-level "usage" (up to maxUsageJSON) and
// keeps the last one that is a usage report for its format, notes
// whether a top-level "error" is null, and counts the characters of the
// generated-text strings, keeping the first sampleCap bytes of their text.
// Memory stays bounded whatever the input.
type jsonScanner struct {
	format    Format // what a complete usage report has
	state     uint8
	depth     int    // 1 inside the top-level object
	objBits   uint64 // bit d-1 set when the container at depth d (<= 64) is an object
	expectKey bool   // the next string of the current object is a key
	inStr     bool
	esc       bool
	uHex      uint8 // hex digits of a \u escape still to skip
	strKind   uint8
	key       [maxKey]byte // the key being read across Feeds, cut at maxKey
	keyLen    int
	keyText   bool  // the last key read names generated text (textKey)
	top       uint8 // the top-level member whose value is being read
	// quoteAt is plainRun's index of the next quote in the Feed's bytes
	// (their length when none), or below the run's start when unknown.
	quoteAt int

	capturing  bool
	capOver    bool
	capture    []byte
	errFirst   bool // the next non-space byte starts the top-level "error" value
	errNonNull bool

	usage    wireUsage
	hasUsage bool
	chars    charCounter
	sample   sampler // the first of the generated text, decoded
}

const maxKey = 32

// jsonScanner states.
const (
	jsStart uint8 = iota // before the opening brace
	jsBody
	jsDone // the top-level object closed
	jsBad  // not a JSON object
)

// Kinds of string.
const (
	strOther uint8 = iota
	strKey
	strCount // generated text: its characters are counted
)

// Top-level members of interest.
const (
	topOther uint8 = iota
	topUsage
	topError
)

func (s *jsonScanner) feed(p []byte) {
	// While capturing, the bytes of p from capFrom on are the usage value's:
	// they are appended in runs (at the value's end, or p's), not one at a
	// time.
	capFrom := 0
	s.quoteAt = -1 // plainRun's index is p's
	defer func() {
		if s.capturing {
			s.appendCapture(p[capFrom:])
		}
	}()
	if s.state >= jsDone {
		return
	}
	// The state becomes jsDone or jsBad only where the loop returns.
	for i := 0; i < len(p); i++ {
		c := p[i]
		if s.inStr {
			i = s.stringByte(p, i)
			continue
		}
		if inertByte[c] {
			if s.state == jsBody && !s.errFirst {
				// Nothing to do until the next quote or structural byte:
				// take the run at once.
				for i+1 < len(p) && inertByte[p[i+1]] {
					i++
				}
				continue
			}
			switch c {
			case ' ', '\t', '\r', '\n':
				continue
			}
		}
		if s.state == jsStart {
			if c != '{' {
				s.state = jsBad
				return
			}
			s.state, s.depth, s.objBits, s.expectKey = jsBody, 1, 1, true
			continue
		}
		if s.errFirst {
			s.errFirst = false
			s.errNonNull = c != 'n'
		}
		switch c {
		case '"':
			s.inStr = true
			switch {
			case !s.inObject():
				s.strKind = strOther
			case s.expectKey:
				s.strKind, s.keyLen = strKey, 0
			case s.keyText:
				s.strKind = strCount
				s.chars.esc, s.chars.uHex = false, 0
			default:
				s.strKind = strOther
			}
			// A string that ends in p with no escape is taken whole.
			if e := plainEnd(p, i+1); e < len(p) && p[e] == '"' {
				if s.strKind == strKey { // read in place, not copied
					s.inStr = false
					s.endKey(p[i+1:e], true)
				} else {
					s.plainText(p[i+1 : e])
					s.endString()
				}
				i = e
			}
		case '{', '[':
			s.depth++
			if s.depth <= 64 {
				bit := uint64(1) << (s.depth - 1)
				if c == '{' {
					s.objBits |= bit
				} else {
					s.objBits &^= bit
				}
			}
			s.expectKey = c == '{'
		case '}', ']':
			if s.depth == 1 {
				s.endMember(p[capFrom:i])
				s.state = jsDone
				return
			}
			s.depth--
			s.expectKey = false
			if s.depth == 1 && s.capturing { // the usage object or array is complete
				s.appendCapture(p[capFrom : i+1])
				s.endCapture()
			}
		case ',':
			if s.depth == 1 {
				s.endMember(p[capFrom:i])
			}
			s.expectKey = s.inObject()
		case ':':
			s.expectKey = false
			if s.depth == 1 {
				switch s.top {
				case topUsage:
					s.capturing, s.capOver, s.capture = true, false, s.capture[:0]
					capFrom = i + 1
				case topError:
					s.errFirst = true
				}
			}
		}
	}
}

// stringByte handles the byte p[i] inside a string and returns the index
// of the last byte it consumed.
func (s *jsonScanner) stringByte(p []byte, i int) int {
	c := p[i]
	if s.strKind == strCount && !s.esc && s.uHex == 0 && c != '"' && c != '\\' {
		// A run of plain generated text: count and sample it at once.
		run := s.plainRun(p, i)
		s.plainText(run)
		return i + len(run) - 1 // the loop goes on at the quote or backslash
	}
	if s.strKind == strCount && (c != '"' || s.esc || s.uHex > 0) {
		s.chars.addByte(c)
		s.sample.addByte(c)
	}
	switch {
	case s.uHex > 0:
		s.uHex--
		return i
	case s.esc:
		s.esc = false
		if c == 'u' {
			s.uHex = 4
		}
		return i
	}
	switch c {
	case '"':
		s.endString()
		return i
	case '\\':
		s.esc = true
		if s.strKind == strKey {
			s.keyLen = maxKey + 1 // an escaped key is none we look for
		}
		return i
	}
	if s.strKind == strCount {
		return i
	}
	run := s.plainRun(p, i)
	s.plainText(run)
	return i + len(run) - 1 // the loop goes on at the quote or backslash
}

// plainText takes run, bytes of the current string with no quote or
// backslash: a key's are kept (up to maxKey), generated text's counted
// and sampled.
func (s *jsonScanner) plainText(run []byte) {
	switch s.strKind {
	case strKey:
		if s.keyLen < maxKey {
			copy(s.key[s.keyLen:], run)
		}
		s.keyLen += len(run)
	case strCount:
		n := 0
		for _, b := range run { // as charCounter does without escapes
			if b&0xC0 != 0x80 {
				n++
			}
		}
		s.chars.n += int64(n)
		s.sample.add(run)
	}
}

// endString ends the current string at its closing quote: a top-level
// key names the member whose value comes next.
func (s *jsonScanner) endString() {
	s.inStr = false
	switch {
	case s.strKind == strCount:
		s.sample.endString()
	case s.strKind == strKey:
		s.endKey(s.key[:min(s.keyLen, maxKey)], s.keyLen <= maxKey)
	}
}

// endKey takes the key just read, k, whole when ok (not cut at maxKey nor
// escaped): it says whether a string value under it is generated text, and
// at the top level names the member whose value comes next.
func (s *jsonScanner) endKey(k []byte, ok bool) {
	s.keyText = ok && textKey(k)
	if s.depth != 1 {
		return
	}
	s.top = topOther
	if ok {
		switch string(k) {
		case "usage":
			s.top = topUsage
		case "error":
			s.top = topError
		}
	}
}

// inertByte marks the bytes the scanner passes over outside strings:
// whitespace and the bytes of numbers, true, false and null. (Anything
// else that is not JSON is passed over too: the scanner follows
// structure, the upstream's JSON is not validated here.)
var inertByte = func() (t [256]bool) {
	for c := range 256 {
		switch c {
		case '"', '{', '}', '[', ']', ',', ':':
		default:
			t[c] = true
		}
	}
	return t
}()

// plainEnd returns the index of the first quote or backslash in p at or
// after i, or len(p). Keys and most values are short: 8 bytes at a time
// beats IndexByte's call on those, which takes over for long strings.
func plainEnd(p []byte, i int) int {
	for lim := min(len(p), i+32); i+8 <= lim; i += 8 {
		w := binary.LittleEndian.Uint64(p[i:])
		if m := bytesEqual(w, '"') | bytesEqual(w, '\\'); m != 0 {
			return i + firstMarked(m)
		}
	}
	if len(p)-i < 8 {
		for ; i < len(p); i++ {
			if c := p[i]; c == '"' || c == '\\' {
				return i
			}
		}
		return i
	}
	q := bytes.IndexByte(p[i:], '"')
	if q < 0 {
		q = len(p) - i
	}
	if b := bytes.IndexByte(p[i:i+q], '\\'); b >= 0 {
		return i + b
	}
	return i + q
}

// plainRun returns the bytes of p from i up to the next quote or
// backslash. The next quote's index is kept for the Feed, so that a string
// of many escapes costs one search for its end, not one per escape.
func (s *jsonScanner) plainRun(p []byte, i int) []byte {
	if s.quoteAt < i {
		s.quoteAt = len(p)
		if q := bytes.IndexByte(p[i:], '"'); q >= 0 {
			s.quoteAt = i + q
		}
	}
	run := p[i:s.quoteAt]
	if b := bytes.IndexByte(run, '\\'); b >= 0 {
		run = run[:b]
	}
	return run
}

// endMember ends the value of a top-level member at its ',' or '}'; rest
// is what p holds of a captured value up to that delimiter.
func (s *jsonScanner) endMember(rest []byte) {
	if s.capturing { // a scalar
		s.appendCapture(rest)
		s.endCapture()
	}
	s.errFirst = false
	s.top = topOther
}

// appendCapture adds b to the usage value captured, up to maxUsageJSON.
func (s *jsonScanner) appendCapture(b []byte) {
	if room := maxUsageJSON - len(s.capture); len(b) > room {
		b = b[:room]
		s.capOver = true
	}
	s.capture = append(s.capture, b...)
}

// endCapture decodes the captured usage value.
func (s *jsonScanner) endCapture() {
	s.capturing = false
	if !s.capOver {
		if u, ok := decodeUsage(trimWS(s.capture)); ok && u.complete(s.format) {
			s.usage, s.hasUsage = u, true
		}
	}
	if cap(s.capture) > keepBuf {
		s.capture = nil
	}
}

// inObject reports whether the innermost open container is an object.
func (s *jsonScanner) inObject() bool {
	return s.depth >= 1 && s.depth <= 64 && s.objBits&(1<<(s.depth-1)) != 0
}

// textKey reports whether a string under key k is generated text.
func textKey(k []byte) bool {
	switch string(k) {
	case "content", "text", "reasoning_content", "thinking", "arguments", "refusal":
		return true
	}
	return false
}
