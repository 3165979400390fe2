package meter

// This file decides what a response costs in tokens, from the upstream's
// report when there is one and from an estimate otherwise, and bounds both
// by what the request could have produced: every number an upstream sends
// is taken as hostile.

// BillTerms are what [Bill] needs to know about a response besides what its
// Observer saw.
type BillTerms struct {
	// Outcome is how the response ended as the caller records it: the
	// Result's Outcome, or what the caller knows better (OutcomeClientGone,
	// or an error of its own when the upstream never answered). A report
	// counts as complete only with OutcomeCompleted.
	Outcome Outcome
	// Status is the HTTP status of the upstream's answer.
	Status int
	// Answered is true when the upstream's answer began (its header was
	// written). Without a report, an answer with a Status below 400 is
	// billed from an estimate; anything else costs nothing.
	Answered bool
	// OutputLimit is the most output tokens one choice may produce: the
	// request's MaxOutputTokens, or the route's default when the request
	// sets none. It bounds the billed output at req.Choices × OutputLimit
	// (reasoning included, as the upstreams count it). 0 or less sets no
	// bound but maxCount. Embeddings bill no output whatever it is.
	OutputLimit int64
	// MinInput, when positive, is a floor under the billed input tokens.
	// Set it to req.InputEstimate (the input estimated for the hold) when
	// the client went away and the upstream request was cancelled: the
	// upstream has read the whole input by then and bills it, whatever it
	// reported. The floor applies to every response except an upstream
	// error answer (Answered with a Status of 400 or more), and marks the
	// bill Estimated when it raises the input.
	MinInput int64
	// MinOutput, when positive, is a floor under the billed output tokens,
	// applied as MinInput is. Set it when the gateway itself cut an
	// upstream that was still generating (its client had gone and
	// client_gone_timeout passed): what the upstream generated is unknown,
	// up to the request's output limit, and the provider bills it.
	MinOutput int64
}

// Billed is the token count a response is billed for.
type Billed struct {
	// Usage is the count to price and record.
	Usage Usage
	// Estimated is true when some of Usage is estimated rather than
	// reported: there was no report, the report was cut short and the
	// output that passed was larger, or MinInput raised the input.
	Estimated bool
	// Clamped is true when the report held a count larger than the request
	// could produce (see [Bill]) and it was cut: a sign of a broken or
	// hostile upstream, worth recording and counting.
	Clamped bool
}

// Bounds of the input a request can have cost.
const (
	// inputOverhead covers the tokens an upstream adds to a body's own:
	// message framing, the system prompt that comes with tool use, and
	// the like.
	inputOverhead = 4096
	// contextInputBound bounds the input of one model call that reads more
	// than its body holds: media parts (images, audio and files, which an
	// upstream may count at tens of thousands of tokens each, or by the
	// page), or a Responses request that continues a stored response or
	// conversation (previous_response_id, conversation, item_reference) or
	// uses a stored prompt. It is above the largest context window of the
	// models served today, which bounds such a call, yet finite, so that
	// an absurd report still cannot drain an account.
	contextInputBound = 2_000_000
	// toolInputBound bounds the input of a request that offers the
	// upstream's own tools (web search, file search, MCP, code execution:
	// a typed tool other than "function" and "custom", mcp_servers,
	// container, web_search_options). The upstream may then run many model
	// calls within one response, each reading the transcript so far, and
	// reports their sum.
	toolInputBound = 20_000_000
)

// Bill decides what the response to req costs in tokens, given what its
// Observer saw (res) and the terms t:
//
//   - a report with OutcomeCompleted is billed as reported;
//   - a report cut short (any other outcome: e.g. Anthropic's
//     message_start, then a cut) keeps its input, and its output is the
//     larger of the reported and the estimated ([EstimateOutput]) output;
//   - no report on an answer with a status below 400: [Estimate] of the
//     request and of what passed;
//   - no report on an upstream error (or no answer at all): nothing.
//
// Every count is then bounded by what the request could produce, and a
// reported count over its bound sets Clamped:
//
//   - output <= req.Choices × t.OutputLimit (0 for embeddings);
//   - input <= one token per byte of req.Body plus a fixed overhead of
//     4096; or 2,000,000 when the request has media parts (req.MediaParts)
//     or reads a stored response, conversation or prompt; or 20,000,000
//     when it offers the upstream's own tools (see contextInputBound and
//     toolInputBound);
//   - cached input and cache writes <= input, reasoning <= output.
//
// Estimates get the same bounds. Finally t.MinInput is a floor under the
// input (see [BillTerms]). Bill needs req.Body; a nil req bills the output
// estimate only, with no input bound.
func Bill(req *Request, res Result, t BillTerms) Billed {
	var b Billed
	model := ""
	if req != nil {
		model = req.Model
	}
	outMax := outputBound(req, t.OutputLimit)
	switch {
	case res.HasUsage:
		u := res.Usage
		var adjusted bool
		if req == nil || req.Format != FormatEmbeddings {
			u.OutputTokens, adjusted = visibleOutput(model, res, u.OutputTokens, outMax, t.Outcome == OutcomeCompleted)
			// An upstream that ignored the request's limit still
			// delivered what passed: that much is billed, whatever the
			// limit said.
			outMax = max(outMax, u.OutputTokens)
		}
		b.Usage, b.Clamped = bound(req, u, outMax)
		b.Clamped = b.Clamped || adjusted
		if t.Outcome == OutcomeCompleted {
			break
		}
		if est := min(EstimateOutput(model, res), outMax); est > b.Usage.OutputTokens {
			b.Usage.OutputTokens, b.Estimated = est, true
		}
	case t.Answered && t.Status < 400:
		b.Usage, _ = bound(req, Estimate(req, res), outMax)
		b.Estimated = true
	}
	if floor := min(t.MinInput, maxCount); floor > b.Usage.InputTokens && (!t.Answered || t.Status < 400) {
		b.Usage.InputTokens, b.Estimated = floor, true
	}
	if floor := min(t.MinOutput, outMax); floor > b.Usage.OutputTokens && (!t.Answered || t.Status < 400) {
		b.Usage.OutputTokens, b.Estimated = floor, true
	}
	return b
}

// maxCharsPerToken is how many characters of generated text one output
// token covers at least, in any tokenizer: a report of fewer output
// tokens than the text that passed divided by it cannot be true.
const maxCharsPerToken = 16

// visibleOutput checks a reported output count against the text that
// passed (res.OutputChars, res.OutputSample):
//
//   - a count over outMax, the request's limit, is cut to the larger of
//     outMax and the estimate of the text that passed ([EstimateOutput]):
//     an upstream that ignored the limit (e.g. one that does not know
//     max_completion_tokens) still delivered that text;
//   - in a complete report (complete), a count under one token per
//     maxCharsPerToken characters of text that passed is raised to the
//     estimate, at most outMax: a report sent too early, or a
//     placeholder, cannot make the text that followed free. (A report cut
//     short is raised to the estimate by Bill itself, as an estimate.)
//
// adjusted is true when the count was changed. The estimate (a tokenizer
// run) is made only in those two cases.
func visibleOutput(model string, res Result, reported, outMax int64, complete bool) (out int64, adjusted bool) {
	reported = max(reported, 0)
	switch {
	case reported > outMax:
		out = min(reported, max(outMax, EstimateOutput(model, res)))
		return out, out != reported
	case complete && reported < res.OutputChars/maxCharsPerToken:
		if est := min(EstimateOutput(model, res), outMax); est > reported {
			return est, true
		}
	}
	return reported, false
}

// bound cuts u to what req could produce, with at most outMax output
// tokens, and reports whether a count was cut.
func bound(req *Request, u Usage, outMax int64) (Usage, bool) {
	in := u
	u.OutputTokens = min(max(u.OutputTokens, 0), outMax)
	u.InputTokens = max(u.InputTokens, 0)
	if req != nil && u.InputTokens > bodyInputBound(req) {
		u.InputTokens = min(u.InputTokens, inputBound(req))
	}
	u.InputTokens = min(u.InputTokens, maxCount)
	u.CachedInputTokens = min(max(u.CachedInputTokens, 0), u.InputTokens)
	u.CacheWriteTokens = min(max(u.CacheWriteTokens, 0), u.InputTokens-u.CachedInputTokens)
	u.ReasoningTokens = min(max(u.ReasoningTokens, 0), u.OutputTokens)
	return u, u != in
}

// outputBound is the most output tokens req can produce with limit tokens
// per choice.
func outputBound(req *Request, limit int64) int64 {
	if req != nil && req.Format == FormatEmbeddings {
		return 0
	}
	if limit <= 0 {
		return maxCount
	}
	choices := int64(1)
	if req != nil {
		choices = max(req.Choices, 1)
	}
	limit = min(limit, maxCount)
	if choices > maxCount/limit {
		return maxCount
	}
	return choices * limit
}

// MaxInputTokens is the most input tokens req can be billed for: the
// bound [Bill] cuts a report to. A hold that covers it (with the output
// bound) covers everything the request can cost.
func MaxInputTokens(req *Request) int64 { return inputBound(req) }

// bodyInputBound is the most input tokens req's body can hold by itself:
// one per byte (no tokenizer makes a token of less than a byte, and JSON
// escapes only lengthen the text) and inputOverhead.
func bodyInputBound(req *Request) int64 {
	return min(int64(len(req.Body))+inputOverhead, maxCount)
}

// inputBound is the most input tokens req can have cost: bodyInputBound,
// or more when the upstream can read more than the body holds.
func inputBound(req *Request) int64 {
	n := bodyInputBound(req)
	switch beyondBody(req) {
	case readsTools:
		return max(n, toolInputBound)
	case readsStored:
		return max(n, contextInputBound)
	}
	return n
}

// What a request lets the upstream read besides its body.
const (
	readsBody   = iota
	readsStored // media parts, stored responses, conversations, prompts
	readsTools  // the upstream's own tools
)

// beyondBody tells what req lets the upstream read that is not in its body
// (see contextInputBound and toolInputBound): what its members allow
// (memberReach, found by ParseRequest or by a walk of the body's
// top-level members here), and stored media for media parts.
func beyondBody(req *Request) int {
	level := req.reach - 1
	if req.reach == 0 { // not from ParseRequest
		level = readsBody
		it, _ := members(req.Body)
		for {
			k, v, more := it.next()
			if !more {
				break
			}
			level = max(level, memberReach(req.Format, k, v))
		}
	}
	if req.MediaParts > 0 {
		level = max(level, readsStored)
	}
	return level
}

// memberReach is what one top-level member of a body of format f lets
// the upstream read besides the body, matching keys unescaped as the
// upstream does: its own tools (server tools, MCP servers, containers, web
// search), or stored context (previous responses, conversations, prompts,
// item references).
func memberReach(f Format, k, v []byte) int {
	if isNull(v) {
		return readsBody
	}
	switch {
	case keyIs(k, "tools"):
		if serverTools(v) {
			return readsTools
		}
	case keyIs(k, "mcp_servers"), keyIs(k, "container"), keyIs(k, "web_search_options"):
		return readsTools
	case f != FormatResponses:
	case keyIs(k, "previous_response_id"), keyIs(k, "conversation"), keyIs(k, "prompt"):
		return readsStored
	case keyIs(k, "input"):
		if hasItemOfType(v, "item_reference") {
			return readsStored
		}
	}
	return readsBody
}

// hasItemOfType reports whether the array v has an object whose "type"
// is typ.
func hasItemOfType(v []byte, typ string) bool {
	arr, _ := elements(v)
	for {
		item, ok := arr.next()
		if !ok {
			return false
		}
		if t, ok := typeOf(item); ok && t == typ {
			return true
		}
	}
}

// typeOf returns the "type" string of the object v, unescaped; ok is false
// when it has none. The last "type" wins, as in the upstreams' parsers.
func typeOf(v []byte) (typ string, ok bool) {
	var raw []byte
	it, _ := members(v)
	for {
		k, val, more := it.next()
		if !more {
			break
		}
		if keyIs(k, "type") {
			raw = val
		}
	}
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	return unquote(raw[1 : len(raw)-1]), true
}

// serverTools reports whether a tools array offers a tool the upstream
// runs itself: one whose "type" is a string other than "function" or
// "custom".
func serverTools(v []byte) bool {
	arr, _ := elements(v)
	for {
		tool, ok := arr.next()
		if !ok {
			return false
		}
		if t, ok := typeOf(tool); ok && t != "function" && t != "custom" {
			return true
		}
	}
}
