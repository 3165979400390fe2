package meter

import (
	"io"
	"strings"
	"sync"
)

// Outcome says how a response ended.
type Outcome string

// Outcomes of a response.
const (
	// OutcomeCompleted is a normal end: [DONE], message_stop,
	// response.completed or response.incomplete, or a complete JSON body.
	OutcomeCompleted Outcome = "completed"
	// OutcomeUpstreamError is an upstream status >= 400, or a JSON body whose
	// top-level "error" is not null.
	OutcomeUpstreamError Outcome = "upstream_error"
	// OutcomeStreamError is an error event, data JSON with a top-level
	// "error" mid-stream, response.failed, or a body that is not JSON.
	OutcomeStreamError Outcome = "stream_error"
	// OutcomeCutOff is a stream or body that ended without its terminator.
	OutcomeCutOff Outcome = "upstream_cut"
	// OutcomeClientGone is set by the caller when the client went away; the
	// Observer never reports it.
	OutcomeClientGone Outcome = "client_gone"
)

// Result is what an Observer learned.
type Result struct {
	// Usage is the last usage report seen (zero when HasUsage is false),
	// as the upstream sent it: [Bill] bounds it by what the request could
	// have cost.
	Usage Usage
	// HasUsage is true when an upstream usage report was seen: a usage
	// object with both the input and the output count of the format
	// (prompt_tokens and completion_tokens for chat and completions,
	// prompt_tokens alone for embeddings, input_tokens and output_tokens for
	// Responses and Anthropic Messages), each a non-negative integer. An
	// object without them, such as {} or {"total_tokens":9}, is not a report
	// and is ignored. The last report wins; Anthropic message_delta overlays
	// its cumulative fields on message_start's, so after a cut Anthropic
	// stream Usage holds the real input and the placeholder output of
	// message_start.
	HasUsage bool
	// Outcome is how the response ended.
	Outcome Outcome
	// OutputChars counts the characters (runes) of generated text that
	// passed: content, reasoning, text and tool-argument deltas in a stream;
	// the same fields of a JSON body. The data of an SSE event too long to
	// decode (over 1 MiB) counts one per byte instead, as an upper bound of
	// the text it may hold.
	OutputChars int64
	// OutputSample is the start of that text, decoded (escapes resolved):
	// at most 16 KiB, cut at a rune boundary; nil when no text passed. It is
	// the Observer's own memory: valid while the Observer is, and not to be
	// modified. [EstimateOutput] counts its tokens.
	OutputSample []byte
	// Stream is true when the response was SSE.
	Stream bool
}

const (
	maxLine      = 1 << 20  // longest SSE line or event data decoded; longer ones are skipped
	maxUsageJSON = 64 << 10 // largest top-level "usage" value read from a JSON body
	maxEventName = 64       // longer event names are cut (none we know is)
	keepBuf      = 64 << 10 // larger buffers are dropped once used, to keep streams small
)

// Observer watches one response as its bytes pass to the client, forwarding
// them without delay, and hides the usage-only chunk the gateway caused.
// It is not safe for concurrent use.
type Observer struct {
	format  Format
	hideReq bool // the request asked for hiding; it applies only to SSE
	stream  bool // the request asked to stream
	started bool
	status  int
	sse     bool
	werr    error

	// What was learned.
	wire      wireUsage
	hasUsage  bool
	done      bool // the terminator was seen
	streamErr bool
	chars     int64
	sample    sampler // the first of the generated text, decoded

	// SSE framing.
	limit     int    // longest line or event data decoded (maxLine; tests lower it)
	hiding    bool   // the usage-only chunk may be hidden
	line      []byte // the partial line, at most limit bytes; held back from w while hiding
	skip      bool   // inside a line longer than limit: its bytes pass unread
	skipData  bool   // that line is data: its bytes count toward chars
	dataOver  bool   // the current event's data is over limit: it is skipped
	pendingCR bool   // the last byte was a CR: an LF next is part of that line end
	droppedCR bool   // the line ended by that CR was hidden
	dropBlank bool   // a hidden data line: hide the blank line that follows
	inEvent   bool   // a field other than data was seen in this event
	hasData   bool
	event     []byte
	data      []byte

	json jsonScanner

	onEvent func(ev, data []byte) // a test hook: sees each dispatched event
}

// NewObserver returns an Observer for the response to req. Only req's
// Format, Stream, InjectedUsage and ClientWantsUsage are used; Body is not
// kept. A nil req observes a FormatUnknown response.
//
// An Observer comes from a pool: [Observer.Free] gives it back once its
// Result has been used, so a busy gateway does not allocate one, nor its
// buffers, per response.
func NewObserver(req *Request) *Observer {
	o := observers.Get().(*Observer)
	o.limit = maxLine
	if req == nil {
		return o
	}
	o.format = req.Format
	o.json.format = req.Format
	o.stream = req.Stream
	o.hideReq = req.InjectedUsage && !req.ClientWantsUsage &&
		(req.Format == FormatChat || req.Format == FormatCompletions)
	return o
}

// observers holds freed Observers, with their buffers, for reuse.
var observers = sync.Pool{New: func() any { return new(Observer) }}

// Free resets o and returns it to the pool. Neither o nor the OutputSample
// of its Result may be used after. Buffers larger than the usual answer
// needs are dropped, so a pooled Observer stays small.
func (o *Observer) Free() {
	o.reset()
	observers.Put(o)
}

// reset zeroes o but for its emptied buffers.
func (o *Observer) reset() {
	line, data, event := reuse(o.line), reuse(o.data), reuse(o.event)
	capture, jsonSample, sseSample := reuse(o.json.capture), reuse(o.json.sample.buf), reuse(o.sample.buf)
	*o = Observer{line: line, data: data, event: event}
	o.json.capture, o.json.sample.buf, o.sample.buf = capture, jsonSample, sseSample
}

// maxPooledBuf is the largest buffer a freed Observer keeps.
const maxPooledBuf = sampleCap

// reuse returns b emptied, or nil when it is too large to keep.
func reuse(b []byte) []byte {
	if cap(b) > maxPooledBuf {
		return nil
	}
	return b[:0]
}

// Start is called once with the upstream status and Content-Type before the
// first Feed. A Content-Type starting with text/event-stream means SSE; an
// empty one means SSE when the request asked to stream. Feed without Start
// acts as Start(200, "").
func (o *Observer) Start(status int, contentType string) {
	if o.started {
		return
	}
	o.started = true
	o.status = status
	ct := strings.TrimSpace(contentType)
	if ct == "" {
		o.sse = o.stream
	} else {
		const sse = "text/event-stream"
		o.sse = len(ct) >= len(sse) && strings.EqualFold(ct[:len(sse)], sse)
	}
	o.hiding = o.hideReq && o.sse
}

// Feed processes p and writes to w, at once, the bytes the client should
// get: exactly p, except for the hidden usage-only chunk. While hiding is
// possible a trailing partial line is held until its end arrives. Feed does
// not retain p. It returns the first write error from w; after one, it
// writes no more but goes on metering.
func (o *Observer) Feed(w io.Writer, p []byte) error {
	if !o.started {
		o.Start(200, "")
	}
	switch {
	case !o.sse:
		o.write(w, p)
		o.json.feed(p)
	case o.hiding:
		o.frame(w, p)
	default:
		o.write(w, p)
		o.frame(nil, p)
	}
	return o.werr
}

// Close is called at the end of the response. It writes any held bytes to
// w, discards a truncated last event and returns the first write error.
func (o *Observer) Close(w io.Writer) error {
	if o.hiding && len(o.line) > 0 {
		o.write(w, o.line)
	}
	o.hiding = false
	return o.werr
}

// Result returns what the Observer learned; it is final after Close.
func (o *Observer) Result() Result {
	r := Result{Outcome: o.outcome(), Stream: o.sse}
	if o.sse {
		r.HasUsage, r.OutputChars, r.OutputSample = o.hasUsage, o.chars, o.sample.sample()
		if o.hasUsage {
			r.Usage = o.wire.usage(o.format)
		}
		return r
	}
	r.HasUsage, r.OutputChars, r.OutputSample = o.json.hasUsage, o.json.chars.n, o.json.sample.sample()
	if o.json.hasUsage {
		r.Usage = o.json.usage.usage(o.format)
	}
	return r
}

func (o *Observer) outcome() Outcome {
	if o.status >= 400 {
		return OutcomeUpstreamError
	}
	if !o.sse {
		switch {
		case o.json.state == jsBad:
			return OutcomeStreamError
		case o.json.errNonNull:
			return OutcomeUpstreamError
		case o.json.state == jsDone:
			return OutcomeCompleted
		}
		return OutcomeCutOff
	}
	switch {
	case o.streamErr:
		return OutcomeStreamError
	case o.done:
		return OutcomeCompleted
	}
	return OutcomeCutOff
}

// write forwards b to w unless an earlier write failed.
func (o *Observer) write(w io.Writer, b []byte) {
	if len(b) == 0 || o.werr != nil {
		return
	}
	if _, err := w.Write(b); err != nil {
		o.werr = err
	}
}
