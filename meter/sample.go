package meter

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// sampleCap is the most generated text an Observer keeps, decoded, for the
// output estimate; sampleStart is the buffer's first size.
const (
	sampleCap   = 16 << 10
	sampleStart = 512
)

// sampler keeps the first sampleCap bytes of the generated text, decoding
// the JSON string content fed to it (in pieces split anywhere) as
// encoding/json would: escapes are resolved, a surrogate pair becomes one
// rune and a lone surrogate U+FFFD. Invalid UTF-8 is kept as is. The buffer
// is allocated when the first text arrives, at 512 bytes, and doubles as
// needed up to sampleCap (at most 6 allocations per response, none once it
// is full; a short answer costs one small buffer, not 16 KiB). The sample is
// cut at a rune boundary.
type sampler struct {
	buf  []byte // cap <= sampleCap
	full bool   // no more text fits
	esc  bool   // the previous byte was a backslash
	uHex uint8  // hex digits of a \u escape still to read
	u    rune   // the \u code unit read so far
	hi   rune   // a high surrogate waiting for its low half; 0 if none
}

// addString feeds the content of a complete JSON string (without quotes).
func (s *sampler) addString(raw []byte) {
	s.esc, s.uHex, s.hi = false, 0, 0
	s.add(raw)
	s.endString()
}

// add feeds a piece of JSON string content.
func (s *sampler) add(p []byte) {
	for len(p) > 0 && !s.full {
		if !s.esc && s.uHex == 0 && s.hi == 0 {
			// Copy the run up to the next escape at once.
			k := bytes.IndexByte(p, '\\')
			if k < 0 {
				k = len(p)
			}
			s.appendRaw(p[:k])
			p = p[k:]
			if len(p) == 0 {
				return
			}
		}
		s.addByte(p[0])
		p = p[1:]
	}
}

// addByte feeds one byte of JSON string content.
func (s *sampler) addByte(c byte) {
	if s.full {
		return
	}
	switch {
	case s.uHex > 0:
		s.uHex--
		s.u = s.u<<4 | rune(hexVal(c))
		if s.uHex == 0 {
			s.escapedUnit(s.u)
		}
	case s.esc:
		s.esc = false
		if c == 'u' {
			s.uHex, s.u = 4, 0
			return
		}
		s.flushHigh()
		switch c {
		case 'b':
			c = '\b'
		case 'f':
			c = '\f'
		case 'n':
			c = '\n'
		case 'r':
			c = '\r'
		case 't':
			c = '\t'
		}
		s.appendRaw([]byte{c})
	case c == '\\':
		s.esc = true
	default:
		s.flushHigh()
		s.appendRaw([]byte{c})
	}
}

// endString ends a string: a high surrogate still waiting is lone.
func (s *sampler) endString() {
	s.flushHigh()
	s.esc, s.uHex = false, 0
}

// escapedUnit handles the UTF-16 code unit of a \u escape.
func (s *sampler) escapedUnit(u rune) {
	if s.hi != 0 {
		hi := s.hi
		s.hi = 0
		if r := utf16.DecodeRune(hi, u); r != utf8.RuneError {
			s.appendRune(r)
			return
		}
		s.appendRune(utf8.RuneError)
	}
	switch {
	case u >= 0xD800 && u < 0xDC00:
		s.hi = u
	case u >= 0xDC00 && u < 0xE000:
		s.appendRune(utf8.RuneError)
	default:
		s.appendRune(u)
	}
}

// flushHigh writes a lone high surrogate as U+FFFD.
func (s *sampler) flushHigh() {
	if s.hi != 0 {
		s.hi = 0
		s.appendRune(utf8.RuneError)
	}
}

func (s *sampler) appendRune(r rune) {
	var b [utf8.UTFMax]byte
	s.appendRaw(utf8.AppendRune(b[:0], r))
}

// appendRaw appends decoded bytes, or as many as fit; when they do not all
// fit the sample is full and loses a rune its end cut in two.
func (s *sampler) appendRaw(p []byte) {
	if len(p) == 0 || s.full {
		return
	}
	room := sampleCap - len(s.buf)
	if need := len(s.buf) + min(len(p), room); need > cap(s.buf) {
		c := max(sampleStart, 2*cap(s.buf))
		for c < need {
			c *= 2
		}
		s.buf = append(make([]byte, 0, min(c, sampleCap)), s.buf...)
	}
	if len(p) <= room {
		s.buf = append(s.buf, p...)
		return
	}
	s.buf = append(s.buf, p[:room]...)
	s.full = true
	// Drop an incomplete last rune.
	for i := len(s.buf) - 1; i >= 0 && i >= len(s.buf)-utf8.UTFMax; i-- {
		if !utf8.RuneStart(s.buf[i]) {
			continue
		}
		if !utf8.FullRune(s.buf[i:]) {
			s.buf = s.buf[:i]
		}
		break
	}
}

// sample returns the text kept, or nil.
func (s *sampler) sample() []byte {
	if len(s.buf) == 0 {
		return nil
	}
	return s.buf
}

// hexVal is the value of a hex digit; other bytes count 0, as a bad escape
// has no right answer.
func hexVal(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10
	}
	return 0
}
