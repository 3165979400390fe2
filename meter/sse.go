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
//
// A line longer than o.limit is never held: from the moment it is known to
// be long, its bytes pass at once and are skipped (see longLine), and the
// lines after it are framed as usual.
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
		partial := eol == len(p) // the line goes on in the next call
		end := eol + 1
		if !partial && p[eol] == '\r' {
			switch {
			case end == len(p):
				o.pendingCR = true
			case p[end] == '\n':
				end++
			}
		}
		carried := len(o.line)
		switch {
		case o.skip:
			o.skipped(int64(eol - i))
		case carried+eol-i > o.limit:
			if hide {
				o.write(w, o.line) // held back by the last call; fwd == i here
			}
			o.longLine(p[i:eol])
		case partial: // keep it for the next call
			if hide {
				o.write(w, p[fwd:i])
			}
			o.line = append(o.line, p[i:]...)
			return
		default:
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
				o.resetLine()
			}
		}
		if partial {
			break // the rest of a long line: forwarded below
		}
		if o.skip { // a long line ends here
			o.skip, o.skipData = false, false
			o.droppedCR = false
		}
		i = end
	}
	if hide {
		o.write(w, p[fwd:])
	}
}

// resetLine empties o.line, dropping a large buffer.
func (o *Observer) resetLine() {
	o.line = o.line[:0]
	if cap(o.line) > keepBuf {
		o.line = nil
	}
}

// longLine starts skipping a line found to be longer than o.limit: part is
// its piece in this call, after the bytes held in o.line. The line's first
// bytes tell its field. A long data line spoils its event, which is then
// not decoded (see spoilData); a long event line sets the event name (cut,
// as any); any other field makes the event one that is never hidden. The
// line is not hidden either, and it does not end metering: the lines after
// it are framed as usual.
func (o *Observer) longLine(part []byte) {
	seen := int64(len(o.line) + len(part))
	var buf [longHead]byte // enough for "event: " and the longest name kept
	head := append(buf[:0], o.line[:min(len(o.line), longHead)]...)
	head = append(head, part[:min(len(part), longHead-len(head))]...)
	o.resetLine()
	o.skip, o.skipData = true, false
	o.dropBlank = false
	if head[0] == ':' { // a comment
		return
	}
	name, value := fieldOf(head)
	switch string(name) {
	case "data":
		o.spoilData(seen - int64(len(head)-len(value)))
		o.skipData = true
	case "event":
		o.event = append(o.event[:0], value[:min(len(value), maxEventName)]...)
		o.inEvent = true
	default:
		o.inEvent = true
	}
}

// longHead is how much of a long line longLine reads.
const longHead = len("event: ") + maxEventName

// skipped notes n more bytes of the long line being skipped.
func (o *Observer) skipped(n int64) {
	if o.skipData {
		o.chars += n
	}
}

// spoilData marks the current event's data as too long to decode, with n
// more bytes of data value. The event is then skipped at its dispatch. Since
// its text cannot be counted, the length of its data in bytes (the values of
// its data lines joined by newlines, as far as they passed) counts toward
// OutputChars instead: every character of text in it takes at least a byte,
// so this errs toward billing the text the client got, and an estimate is
// never zero for it; the output bound of [Bill] caps it.
func (o *Observer) spoilData(n int64) {
	if o.hasData {
		n++ // the newline joining it to the data before
		if !o.dataOver {
			n += int64(len(o.data))
		}
	}
	o.chars += n
	o.hasData, o.dataOver = true, true
	o.data = o.data[:0]
	if cap(o.data) > keepBuf {
		o.data = nil
	}
}

// fieldOf splits an SSE line into its field name and value.
func fieldOf(line []byte) (name, value []byte) {
	c := bytes.IndexByte(line, ':')
	if c < 0 {
		return line, nil
	}
	name, value = line[:c], line[c+1:]
	if len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	return name, value
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
	name, value := fieldOf(line)
	switch string(name) {
	case "data":
		switch {
		case o.dataOver:
			o.spoilData(int64(len(value)))
			return false
		case o.hasData && len(o.data)+1+len(value) > o.limit:
			o.spoilData(int64(len(value)))
			return false
		}
		// Hide only an event that is nothing but this one data line, so
		// that removing it with its blank line leaves the stream well formed.
		if o.hiding && !o.hasData && !o.inEvent && usageOnlyChunk(value) {
			drop = true
			o.dropBlank = true
		}
		if o.hasData {
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

// dispatch ends the current event at a blank line. An event whose data
// was too long is skipped.
func (o *Observer) dispatch() {
	if o.hasData && !o.dataOver {
		if o.onEvent != nil {
			o.onEvent(o.event, o.data)
		}
		o.handleEvent(o.event, o.data)
	}
	o.hasData, o.inEvent, o.dataOver = false, false, false
	o.event = o.event[:0]
	o.data = o.data[:0]
	if cap(o.data) > keepBuf {
		o.data = nil
	}
}
