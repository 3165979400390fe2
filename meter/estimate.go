package meter

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// This file estimates the tokens of a request that ended without a usage
// report (the client hung up, the upstream cut the stream or sent an error
// event, or the upstream reports no usage at all). The estimate is billed
// and the record marked estimated. It runs once, at the end of such a
// request, so it favours clarity over speed; it never panics.

// Chat overhead per the OpenAI cookbook heuristic: every message costs 3
// tokens of framing, and the reply is primed with 3 more.
const (
	tokensPerMessage = 3
	tokensPerReply   = 3
)

// Estimate estimates the usage of the request req whose response gave r:
// [EstimateInput] of req.Body and [EstimateOutput] of r. The caller must
// keep req.Body until then. A nil req estimates the output only.
func Estimate(req *Request, r Result) Usage {
	if req == nil {
		return Usage{OutputTokens: EstimateOutput("", r)}
	}
	return Usage{
		InputTokens:  EstimateInput(req.Format, req.Model, req.Body),
		OutputTokens: EstimateOutput(req.Model, r),
	}
}

// EstimateInput estimates the input tokens of a request body in format f
// for model, by counting ([CountTokens]) the text the model reads, joined
// by newlines:
//
//   - chat: each message's role, name and content (a string, or the "text"
//     of its parts), the name and arguments of its tool calls (and of a
//     legacy function_call); the name, description and parameters (compact
//     JSON) of each tool or function offered;
//   - completions: prompt (a string or an array of strings) and suffix;
//   - embeddings: input (a string or an array of strings);
//   - responses: instructions and input (a string, or items: message content
//     as a string or parts' "text", function call names, arguments and
//     outputs, reasoning summaries), and the tools offered;
//   - messages (Anthropic): system (a string or text blocks) and each
//     message's content (a string, or the text of text, thinking, tool_use
//     (name and input as compact JSON) and tool_result blocks), and the tools
//     offered.
//
// Message roles are counted too. Token-id arrays (completions prompt,
// embeddings input) count one token per id. Chat and messages requests add
// 3 tokens per message plus 3 (the OpenAI cookbook's heuristic). Text
// beyond the first 256 KiB is not tokenized but scaled from it by
// characters. Each image, audio, video or file part of chat and Anthropic
// messages and of responses input counts [MediaPartTokens]. A body that is
// not a JSON object is counted as text as a whole; an unknown format
// counts 0.
func EstimateInput(f Format, model string, body []byte) int64 {
	t, ok := gatherPrompt(f, body)
	if !ok {
		return countPrefix(model, body)
	}
	return min(countPrefix(model, t.text)+t.extra+t.media*MediaPartTokens, maxCount)
}

// maxExactInput is the most prompt text tokenized exactly. The tokenizers
// run at about 5 MB/s and allocate per token, so the rest of a longer
// prompt is scaled from its start by characters: an estimate then costs at
// most some 50 ms of CPU, whatever the body size.
const maxExactInput = 256 << 10

// countPrefix counts the tokens of text, exactly up to maxExactInput bytes
// and in proportion to the characters beyond (the characters rule, cheap,
// always counts it all).
func countPrefix(model string, text []byte) int64 {
	if len(text) <= maxExactInput || TokenizerFor(model) == TokenizerChars {
		return CountTokens(model, text)
	}
	cut := maxExactInput
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return scaleTokens(CountTokens(model, text[:cut]), int64(utf8.RuneCount(text[:cut])), int64(utf8.RuneCount(text)))
}

// scaleTokens scales n tokens counted in part characters to total
// characters, rounding up; no scaling when total <= part.
func scaleTokens(n, part, total int64) int64 {
	total = min(total, maxCount)
	if part <= 0 || total <= part {
		return min(n, maxCount)
	}
	return min((n*total+part-1)/part, maxCount) // n <= 2^20, total <= 2^40: no overflow
}

// gatherPrompt extracts what EstimateInput counts; ok is false when body is
// not a JSON object. It walks the body in place (jsonwalk.go): a large body
// costs a validation pass and a few fast scans, not a decoding per level.
// Keys are matched unescaped and the last of duplicates wins, as in
// encoding/json and ParseRequest.
func gatherPrompt(f Format, body []byte) (t promptText, ok bool) {
	if f == FormatUnknown {
		return t, true
	}
	if _, isObj := members(body); !isObj || !validJSON(body) {
		return t, false
	}
	switch f {
	case FormatChat:
		v := fields(body, "messages", "tools", "functions")
		t.messages(v[0], true)
		t.tools(v[1])
		t.tools(v[2])
		t.media = countMedia(v[0], 0)
	case FormatCompletions:
		v := fields(body, "prompt", "suffix")
		t.content(v[0])
		t.content(v[1])
	case FormatEmbeddings:
		t.content(fields(body, "input")[0])
	case FormatResponses:
		v := fields(body, "instructions", "input", "tools")
		t.content(v[0])
		t.content(v[1])
		t.tools(v[2])
		t.media = countMedia(v[1], 0)
	case FormatMessages:
		v := fields(body, "system", "messages", "tools")
		t.content(v[0])
		t.messages(v[1], false)
		t.tools(v[2])
		t.media = countMedia(v[1], 0)
	}
	return t, true
}

// fields returns the values of the named members of object v, in the order
// of names; nil for a member that is absent or v not an object.
func fields(v []byte, names ...string) [][]byte {
	out := make([][]byte, len(names))
	it, _ := members(v)
	for {
		k, val, more := it.next()
		if !more {
			return out
		}
		for i, name := range names {
			if keyIs(k, name) {
				out[i] = val
			}
		}
	}
}

// promptText gathers the text of a request.
type promptText struct {
	text  []byte // the pieces, joined by newlines
	extra int64  // tokens counted directly: ids, message overhead
	media int64  // media parts, MediaPartTokens each
}

// addString appends the JSON string v, decoded, as one piece; v that is
// not a string adds nothing.
func (t *promptText) addString(v []byte) {
	if len(v) < 2 || v[0] != '"' {
		return
	}
	raw := v[1 : len(v)-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		t.add(raw)
		return
	}
	t.add([]byte(unquote(raw)))
}

// add appends one piece of text.
func (t *promptText) add(s []byte) {
	if len(s) == 0 {
		return
	}
	if len(t.text) > 0 {
		t.text = append(t.text, '\n')
	}
	t.text = append(t.text, s...)
}

// addJSON appends a JSON value (a schema, a tool input) in compact form.
// Compact keeps escapes; the model reads the decoded text, but the
// difference is small for schemas and inputs.
func (t *promptText) addJSON(v []byte) {
	if isNull(v) {
		return
	}
	var b bytes.Buffer
	if json.Compact(&b, v) == nil {
		t.add(b.Bytes())
	}
}

// messages gathers a chat or Anthropic messages array, with the per-message
// overhead; elements that are not objects are skipped.
func (t *promptText) messages(v []byte, chat bool) {
	msgs, ok := elements(v)
	if !ok {
		return
	}
	for {
		m, more := msgs.next()
		if !more {
			break
		}
		if _, isObj := members(m); !isObj {
			continue
		}
		t.extra += tokensPerMessage
		f := fields(m, "role", "content", "name", "tool_calls", "function_call")
		t.addString(f[0])
		t.content(f[1])
		if chat {
			t.addString(f[2])
			calls, _ := elements(f[3])
			for {
				call, more := calls.next()
				if !more {
					break
				}
				t.function(fields(call, "function")[0])
			}
			t.function(f[4])
		}
	}
	t.extra += tokensPerReply
}

// function gathers a chat function call: name and arguments.
func (t *promptText) function(v []byte) {
	f := fields(v, "name", "arguments")
	t.addString(f[0])
	t.addString(f[1])
}

// tools gathers the tools offered: name, description and parameter schema
// of each, whether nested under "function" (chat) or not (responses,
// Anthropic's input_schema).
func (t *promptText) tools(v []byte) {
	tools, _ := elements(v)
	for {
		tool, more := tools.next()
		if !more {
			return
		}
		if fn := fields(tool, "function")[0]; fn != nil { // chat: {"type":"function","function":{...}}
			tool = fn
		}
		f := fields(tool, "name", "description", "parameters", "input_schema")
		t.addString(f[0])
		t.addString(f[1])
		t.addJSON(f[2])
		t.addJSON(f[3])
	}
}

// maxContentDepth bounds how deep content nests (arrays of token-id arrays,
// tool results holding blocks): deeper values are not counted.
const maxContentDepth = 8

// content gathers a content value: a string, a number (one token id), or an
// array of these, of arrays (token-id arrays) or of parts.
func (t *promptText) content(v []byte) {
	t.contentAt(v, 0)
}

func (t *promptText) contentAt(v []byte, depth int) {
	if len(v) == 0 || depth > maxContentDepth {
		return
	}
	switch v[0] {
	case '"':
		t.addString(v)
	case '[':
		items, _ := elements(v)
		for {
			it, more := items.next()
			if !more {
				return
			}
			t.contentAt(it, depth+1)
		}
	case '{':
		t.part(v, depth+1)
	case 'n', 't', 'f': // null, true, false
	default: // a number: a token id
		t.extra++
	}
}

// part gathers one content part, block or input item. Image, audio and file
// data are left out (countMedia counts those parts).
func (t *promptText) part(v []byte, depth int) {
	f := fields(v, "text", "refusal", "thinking", "name", "arguments", "type", "input", "role",
		"content", "output", "summary")
	t.addString(f[0]) // text, input_text, output_text parts and blocks
	t.addString(f[1]) // refusal parts
	t.addString(f[2]) // Anthropic thinking blocks
	t.addString(f[3]) // tool_use blocks, function_call items
	t.addString(f[4])
	if f[6] != nil && strings.HasSuffix(str(f[5]), "tool_use") {
		t.addJSON(f[6]) // tool_use and server_tool_use blocks
	}
	t.addString(f[7]) // responses message items
	// Nested text: message items, tool_result blocks, call outputs,
	// reasoning summaries.
	t.contentAt(f[8], depth)
	t.contentAt(f[9], depth)
	t.contentAt(f[10], depth)
}

// str decodes the JSON string v; anything else is "".
func str(v []byte) string {
	if len(v) < 2 || v[0] != '"' {
		return ""
	}
	return unquote(v[1 : len(v)-1])
}

// EstimateOutput estimates the output tokens of a response from the text
// that passed: it counts ([CountTokens]) r.OutputSample, and when
// r.OutputChars is larger than the sample's rune count (the sample is only
// the first 16 KiB), scales the count up in proportion, rounding up. No text
// gives 0; characters without a sample (a Result built by hand) use the
// characters rule at 0.3 token each.
//
// The text is content, reasoning, refusal and tool-argument text. Hidden
// reasoning (OpenAI o-series) is never sent, so it is not counted and such
// responses are undercounted.
func EstimateOutput(model string, r Result) int64 {
	total := min(max(r.OutputChars, 0), maxCount)
	sampleChars := int64(utf8.RuneCount(r.OutputSample))
	if sampleChars == 0 {
		return (3*total + 9) / 10
	}
	return scaleTokens(CountTokens(model, r.OutputSample), sampleChars, total)
}
