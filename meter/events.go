package meter

import "bytes"

// This file decodes the data of one SSE event per format. It walks the
// JSON in place (see jsonwalk.go) so that an ordinary content chunk costs
// no allocation.

var (
	usageKey = []byte(`"usage"`)
	doneData = []byte("[DONE]")
)

// handleEvent decodes one dispatched event. ev and data are reused after
// it returns.
func (o *Observer) handleEvent(ev, data []byte) {
	if string(ev) == "error" {
		o.streamErr = true
		return
	}
	switch o.format {
	case FormatMessages:
		o.messagesEvent(ev, data)
	case FormatResponses:
		o.responsesEvent(ev, data)
	default:
		o.chatEvent(data)
	}
}

// chatEvent handles chat/completions (and any OpenAI-style) chunks.
func (o *Observer) chatEvent(data []byte) {
	if bytes.Equal(trimWS(data), doneData) {
		o.done = true
		return
	}
	it, ok := members(data)
	if !ok {
		return
	}
	for {
		k, v, more := it.next()
		if !more {
			return
		}
		switch string(k) {
		case "choices":
			o.choiceText(v)
		case "usage":
			// The last usage report wins; an object without the counts is none.
			if u, ok := decodeUsage(v); ok && u.complete(o.format) {
				o.wire, o.hasUsage = u, true
			}
		case "error":
			if !isNull(v) {
				o.streamErr = true
			}
		}
	}
}

// choiceText takes the generated text in a chunk's choices:
// delta.content, delta.reasoning_content and tool-call arguments for chat,
// text for completions.
func (o *Observer) choiceText(v []byte) {
	arr, _ := elements(v)
	for {
		choice, ok := arr.next()
		if !ok {
			return
		}
		it, _ := members(choice)
		for {
			k, val, more := it.next()
			if !more {
				break
			}
			switch string(k) {
			case "delta":
				o.deltaText(val)
			case "text":
				o.text(val)
			}
		}
	}
}

// deltaText takes the generated text of one chat delta.
func (o *Observer) deltaText(v []byte) {
	it, _ := members(v)
	for {
		k, val, more := it.next()
		if !more {
			return
		}
		switch string(k) {
		case "content", "reasoning_content":
			o.text(val)
		case "tool_calls":
			calls, _ := elements(val)
			for {
				call, ok := calls.next()
				if !ok {
					break
				}
				o.text(member(member(call, "function"), "arguments"))
			}
		}
	}
}

// text takes one generated-text JSON string v (with its quotes): it counts
// its characters and samples its start. v that is not a string counts zero.
func (o *Observer) text(v []byte) {
	if len(v) < 2 || v[0] != '"' {
		return
	}
	o.chars += stringChars(v)
	o.sample.addString(v[1 : len(v)-1])
}

// messagesEvent handles an Anthropic Messages event.
func (o *Observer) messagesEvent(ev, data []byte) {
	it, ok := members(data)
	if !ok {
		return
	}
	var typ, usage, message, delta []byte
	for {
		k, v, more := it.next()
		if !more {
			break
		}
		switch string(k) {
		case "type":
			typ = v
		case "usage":
			usage = v
		case "message":
			message = v
		case "delta":
			delta = v
		}
	}
	switch string(eventType(typ, ev)) {
	case "message_start":
		o.overlayUsage(member(message, "usage"))
	case "message_delta":
		o.overlayUsage(usage)
	case "content_block_delta":
		o.text(member(delta, "text"))
		o.text(member(delta, "thinking"))
		o.text(member(delta, "partial_json"))
	case "message_stop":
		o.done = true
	case "error":
		o.streamErr = true
	}
}

// overlayUsage lays the fields of a cumulative usage report over the ones
// seen so far. There is a report once the input and the output count have
// both been seen (message_start's output count is a placeholder that
// message_delta replaces).
func (o *Observer) overlayUsage(v []byte) {
	if u, ok := decodeUsage(v); ok {
		o.wire.overlay(&u)
		o.hasUsage = o.wire.complete(o.format)
	}
}

// responsesEvent handles an OpenAI Responses event. A [DONE] is ignored.
func (o *Observer) responsesEvent(ev, data []byte) {
	it, ok := members(data)
	if !ok {
		return
	}
	var typ, delta, response []byte
	for {
		k, v, more := it.next()
		if !more {
			break
		}
		switch string(k) {
		case "type":
			typ = v
		case "delta":
			delta = v
		case "response":
			response = v
		}
	}
	switch string(eventType(typ, ev)) {
	case "response.output_text.delta", "response.refusal.delta",
		"response.reasoning_text.delta", "response.reasoning_summary_text.delta",
		"response.function_call_arguments.delta":
		o.text(delta)
	case "response.completed", "response.incomplete":
		o.responseUsage(response)
		o.done = true
	case "response.failed":
		o.responseUsage(response)
		o.streamErr = true
	case "error":
		o.streamErr = true
	}
}

// responseUsage records response.usage when it is a usage report.
func (o *Observer) responseUsage(response []byte) {
	if u, ok := decodeUsage(member(response, "usage")); ok && u.complete(o.format) {
		o.wire, o.hasUsage = u, true
	}
}

// eventType is the data's "type" string, or the SSE event name without one.
func eventType(typ, ev []byte) []byte {
	if len(typ) >= 2 && typ[0] == '"' {
		return typ[1 : len(typ)-1]
	}
	return ev
}

// member returns the value of key in object v (the last one), or nil.
func member(v []byte, key string) []byte {
	var found []byte
	it, _ := members(v)
	for {
		k, val, more := it.next()
		if !more {
			return found
		}
		if string(k) == key {
			found = val
		}
	}
}

// usageOnlyChunk reports whether a chat/completions chunk is the one the
// gateway asked for: "choices" is an empty array and "usage" an object.
func usageOnlyChunk(v []byte) bool {
	if !hasUsageObject(v) { // cheap test: most chunks have no usage or "usage":null
		return false
	}
	var choices, usage []byte
	it, ok := members(v)
	if !ok {
		return false
	}
	for {
		k, val, more := it.next()
		if !more {
			break
		}
		switch string(k) {
		case "choices":
			choices = val
		case "usage":
			usage = val
		}
	}
	return len(usage) > 0 && usage[0] == '{' && isEmptyArray(choices)
}

// hasUsageObject reports whether v has a "usage" followed by an object.
func hasUsageObject(v []byte) bool {
	for i := 0; i < len(v); {
		k := bytes.Index(v[i:], usageKey)
		if k < 0 {
			return false
		}
		i += k + len(usageKey)
		j := skipWS(v, i)
		if j < len(v) && v[j] == ':' {
			if j = skipWS(v, j+1); j < len(v) && v[j] == '{' {
				return true
			}
		}
	}
	return false
}
