package meter

import (
	"bytes"
	"io"
)

// frame splits p into SSE lines (LF, CRLF or lone CR endings, also when a
// CRLF is split between two calls) and handles each complete line. With w
// nil the caller has forwarded p already. With w set (hiding), frame
// forwards p itself in runs, leaving out hidden lines and holding back a
// trailing partial line in o.line until its end arrives.
func (o *Observer) frame(w io.Writer, p []byte) {
	if len(p) == 0 {
		return
	}
	hide := w != nil
	i, fwd := 0, 0 // fwd: start of the bytes of p not yet forwarded
	if o.pendingCR {
		o.pendingCR = false
		if p[0] == '\n' {
			i = 1
			if o.droppedCR {
				fwd = 1
			}
		}
		o.droppedCR = false
	}
	nl := -1 // index of the next LF at or after i, or len(p)
	for i < len(p) {
		if nl < i {
			if k := bytes.IndexByte(p[i:], '\n'); k >= 0 {
				nl = i + k
			} else {
				nl = len(p)
			}
		}
		eol := nl
		if k := bytes.IndexByte(p[i:nl], '\r'); k >= 0 {
			eol = i + k
		}
		carried := len(o.line)
		if eol == len(p) { // a partial line: keep it for the next call
			if carried+len(p)-i > maxLine {
				o.fail(w, p, fwd)
				return
			}
			if hide {
				o.write(w, p[fwd:i])
			}
			o.line = append(o.line, p[i:]...)
			return
		}
		end := eol + 1
		if p[eol] == '\r' {
			switch {
			case end == len(p):
				o.pendingCR = true
			case p[end] == '\n':
				end++
			}
		}
		if carried+eol-i > maxLine {
			o.fail(w, p, fwd)
			return
		}
		line := p[i:eol]
		if carried > 0 {
			o.line = append(o.line, line...)
			line = o.line
		}
		drop := o.processLine(line)
		if hide {
			switch {
			case drop:
				o.write(w, p[fwd:i])
				fwd = end
			case carried > 0:
				o.write(w, o.line[:carried]) // held back by the last call
			}
			o.droppedCR = drop && o.pendingCR
		}
		if carried > 0 {
			o.line = o.line[:0]
			if cap(o.line) > keepBuf {
				o.line = nil
			}
		}
		i = end
		if o.broken {
			if hide {
				o.write(w, p[fwd:])
				o.hiding = false
			}
			return
		}
	}
	if hide {
		o.write(w, p[fwd:])
	}
}

// fail stops metering after a line too long to frame: a protocol error.
// While hiding, the bytes held back and the rest of p are forwarded; from
// now on every byte passes untouched.
func (o *Observer) fail(w io.Writer, p []byte, fwd int) {
	if w != nil {
		o.write(w, o.line)
		o.write(w, p[fwd:])
	}
	o.broken = true
	o.hiding = false
	o.line, o.data, o.event = nil, nil, nil
}

// processLine handles one complete SSE line and reports whether it is to be
// hidden from the client.
func (o *Observer) processLine(line []byte) (drop bool) {
	if len(line) == 0 {
		drop = o.dropBlank
		o.dropBlank = false
		o.dispatch()
		return drop
	}
	o.dropBlank = false
	if line[0] == ':' { // a comment
		return false
	}
	name, value := line, []byte(nil)
	if c := bytes.IndexByte(line, ':'); c >= 0 {
		name, value = line[:c], line[c+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) {
	case "data":
		// Hide only an event that is nothing but this one data line, so
		// that removing it with its blank line leaves the stream well formed.
		if o.hiding && !o.hasData && !o.inEvent && usageOnlyChunk(value) {
			drop = true
			o.dropBlank = true
		}
		if o.hasData {
			if len(o.data)+1+len(value) > maxLine {
				o.broken = true
				o.data = nil
				return false
			}
			o.data = append(o.data, '\n')
		}
		o.data = append(o.data, value...)
		o.hasData = true
	case "event":
		o.event = append(o.event[:0], value[:min(len(value), maxEventName)]...)
		o.inEvent = true
	default:
		o.inEvent = true
	}
	return drop
}

// dispatch ends the current event at a blank line.
func (o *Observer) dispatch() {
	if o.hasData {
		if o.onEvent != nil {
			o.onEvent(o.event, o.data)
		}
		o.handleEvent(o.event, o.data)
	}
	o.hasData, o.inEvent = false, false
	o.event = o.event[:0]
	o.data = o.data[:0]
	if cap(o.data) > keepBuf {
		o.data = nil
	}
}
