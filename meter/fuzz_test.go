package meter

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// seedFiles adds the golden transcripts (and their CR and CRLF forms for
// SSE) to a fuzz corpus, each with the format its name starts with.
func seedFiles(f *testing.F, ext string, add func(b []byte, fm Format)) {
	names, _ := filepath.Glob(filepath.Join("..", "testdata", "meter", "*"+ext))
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		fm := formatOfFile(filepath.Base(name))
		add(b, fm)
		if ext == ".sse" {
			add(lineEndings(b, "\r\n"), fm)
			add(lineEndings(b, "\r"), fm)
		}
	}
}

// formatOfFile is the format a testdata file name starts with: "chat_",
// "completions_", "embeddings_", "responses_" or "messages_" (or the same
// followed by the extension).
func formatOfFile(name string) Format {
	prefix := name[:strings.IndexAny(name+"_", "_.")]
	for _, fm := range []Format{FormatCompletions, FormatEmbeddings, FormatResponses, FormatMessages} {
		if prefix == fm.String() {
			return fm
		}
	}
	if prefix == "chat" {
		return FormatChat
	}
	return FormatUnknown
}

// allFormats are the values of a fuzzed format byte (format % 6).
var allFormats = []Format{FormatUnknown, FormatChat, FormatCompletions, FormatEmbeddings, FormatResponses, FormatMessages}

// randomPieces cuts b at random points chosen by seed, sometimes into
// single bytes.
func randomPieces(b []byte, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed>>7))
	maxPiece := 1 + r.IntN(64)
	if seed%5 == 0 {
		maxPiece = 1
	}
	var pieces [][]byte
	for len(b) > 0 {
		k := min(len(b), 1+r.IntN(maxPiece))
		pieces = append(pieces, b[:k])
		b = b[k:]
	}
	return pieces
}

type sseRun struct {
	result Result
	out    []byte
	events []string
}

// runSSE observes pieces with lines and event data of at most limit bytes
// decoded (maxLine in production), checking the memory bounds after each
// Feed.
func runSSE(t *testing.T, req *Request, limit int, pieces [][]byte) sseRun {
	o := NewObserver(req)
	o.limit = limit
	o.Start(200, "text/event-stream")
	var run sseRun
	o.onEvent = func(ev, data []byte) { run.events = append(run.events, string(ev)+"|"+string(data)) }
	var out bytes.Buffer
	for _, p := range pieces {
		if err := o.Feed(&out, p); err != nil {
			t.Fatal(err)
		}
		// What is held back while hiding is o.line, a partial line.
		if len(o.line) > limit || len(o.data) > limit || len(o.event) > maxEventName {
			t.Fatalf("buffers over their bound: line %d data %d event %d", len(o.line), len(o.data), len(o.event))
		}
	}
	if err := o.Close(&out); err != nil {
		t.Fatal(err)
	}
	run.result, run.out = o.Result(), out.Bytes()
	return run
}

// refFrame frames b the plain way, all in memory, per the SSE spec, with
// lines and event data over limit bytes skipped: it returns the events
// decoded and the bytes of data skipped (see spoilData), which count as
// characters. A trailing partial line counts only when it is a long data
// line, whose bytes passed.
type refFrame struct {
	events  [][2][]byte
	spoiled int64
}

func refEvents(b []byte, limit int) refFrame {
	var lines [][]byte
	start := 0
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' && b[i] != '\r' {
			continue
		}
		lines = append(lines, b[start:i])
		if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
			i++
		}
		start = i + 1
	}
	var r refFrame
	var ev, data []byte
	has, over := false, false
	dataLine := func(val []byte, long bool) {
		switch {
		case over:
			r.spoiled += 1 + int64(len(val))
		case long || has && len(data)+1+len(val) > limit:
			r.spoiled += int64(len(val))
			if has {
				r.spoiled += 1 + int64(len(data))
			}
			data, has, over = nil, true, true
		default:
			if has {
				data = append(data, '\n')
			}
			data, has = append(data, val...), true
		}
	}
	for _, l := range lines {
		if len(l) == 0 {
			if has && !over {
				r.events = append(r.events, [2][]byte{ev, data})
			}
			ev, data, has, over = nil, nil, false, false
			continue
		}
		if l[0] == ':' {
			continue
		}
		name, val, _ := bytes.Cut(l, []byte(":"))
		val = bytes.TrimPrefix(val, []byte(" "))
		switch string(name) {
		case "data":
			dataLine(val, len(l) > limit)
		case "event":
			ev = append([]byte(nil), val[:min(len(val), maxEventName)]...)
		}
	}
	if rest := b[start:]; len(rest) > limit {
		if name, val, _ := bytes.Cut(rest, []byte(":")); string(name) == "data" {
			dataLine(bytes.TrimPrefix(val, []byte(" ")), true)
		}
	}
	return r
}

// strings returns the events as runSSE records them.
func (r refFrame) strings() []string {
	var out []string
	for _, e := range r.events {
		out = append(out, string(e[0])+"|"+string(e[1]))
	}
	return out
}

// result is what an Observer for req learns from the events and the
// skipped bytes of r: the reference for a framing of any split.
func (r refFrame) result(req *Request) Result {
	o := NewObserver(req)
	o.Start(200, "text/event-stream")
	for _, e := range r.events {
		o.handleEvent(e[0], e[1])
	}
	o.chars += r.spoiled
	return o.Result()
}

// refHidden is what a client gets from b when the usage-only chunk is
// hidden, worked out on the whole input at once: a data line that is the
// first field of its event and a usage-only chunk goes, with the blank line
// right after it. A line over limit bytes is never hidden. A trailing
// partial line is kept.
func refHidden(b []byte, limit int) []byte {
	var out []byte
	hasData, inEvent, dropBlank := false, false, false
	for len(b) > 0 {
		n := bytes.IndexAny(b, "\r\n")
		if n < 0 {
			return append(out, b...)
		}
		end := n + 1
		if b[n] == '\r' && end < len(b) && b[end] == '\n' {
			end++
		}
		line, raw := b[:n], b[:end]
		b = b[end:]
		drop := false
		switch name, val, _ := bytes.Cut(line, []byte(":")); {
		case len(line) == 0:
			drop, dropBlank, hasData, inEvent = dropBlank, false, false, false
		case line[0] == ':':
			dropBlank = false
		case string(name) == "data":
			val = bytes.TrimPrefix(val, []byte(" "))
			drop = !hasData && !inEvent && len(line) <= limit && usageOnlyChunk(val)
			dropBlank, hasData = drop, true
		default:
			dropBlank, inEvent = false, true
		}
		if !drop {
			out = append(out, raw...)
		}
	}
	return out
}

func FuzzSSEFramer(f *testing.F) {
	seedFiles(f, ".sse", func(b []byte, fm Format) {
		f.Add(b, uint64(1), false, uint8(fm))
		f.Add(b, uint64(5), true, uint8(fm))
	})
	// Every format's event decoder, also those without a golden stream.
	for _, fm := range allFormats {
		f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"a\\u00e9\\ud83d\\ude00\"}}],\"usage\":{\"prompt_tokens\":1}}\n\n"+
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"b\\n\"}}\n\n"+
			"data: {\"type\":\"response.output_text.delta\",\"delta\":\"c\\\"\"}\n\ndata: [DONE]\n\n"), uint64(2), true, uint8(fm))
	}
	f.Add([]byte("data: x\r"), uint64(0), true, uint8(FormatMessages))
	f.Add([]byte("data:{\"choices\":[],\"usage\":{}}\r\r\rdata: [DONE]\n\n"), uint64(3), true, uint8(FormatCompletions))
	// Lines and data over the limit, skipped (the fuzzer runs a small limit).
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: "+strings.Repeat("x", 300)+"\r\n\r\n"+
		"event: "+strings.Repeat("e", 300)+"\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n"+
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n"+
		": "+strings.Repeat("c", 300)+"\ndata: [DONE]\n\ndata: "+strings.Repeat("y", 300)), uint64(6), true, uint8(FormatChat))
	f.Add([]byte("data: "+strings.Repeat("d", 60)+"\ndata: "+strings.Repeat("d", 60)+"\n\n"), uint64(7), true, uint8(FormatChat))
	f.Fuzz(func(t *testing.T, in []byte, seed uint64, hide bool, format uint8) {
		if len(in) > 1<<16 {
			return
		}
		req := &Request{Format: Format(format % 6), Stream: true, InjectedUsage: hide}
		for _, limit := range []int{maxLine, 80 + int(seed%128)} {
			whole := runSSE(t, req, limit, [][]byte{in})
			split := runSSE(t, req, limit, randomPieces(in, seed))
			if !reflect.DeepEqual(whole, split) {
				t.Fatalf("limit %d: split changed the outcome:\nwhole %+v\nsplit %+v", limit, whole, split)
			}
			ref := refEvents(in, limit)
			if got, want := whole.events, ref.strings(); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Fatalf("limit %d: events\n got %q\nwant %q", limit, got, want)
			}
			if got, want := whole.result, ref.result(req); !reflect.DeepEqual(got, want) {
				t.Fatalf("limit %d: result\n got %+v\nwant %+v", limit, got, want)
			}
			sample := whole.result.OutputSample
			if len(sample) > sampleCap {
				t.Fatalf("sample of %d bytes", len(sample))
			}
			// Without \u escapes (bad ones, lone surrogates), invalid UTF-8 and
			// skipped data, the sample has as many runes as were counted, until
			// it is full.
			if utf8.Valid(in) && !bytes.Contains(in, []byte(`\u`)) && ref.spoiled == 0 && len(sample) < sampleCap-utf8.UTFMax {
				if (sample == nil) != (whole.result.OutputChars == 0) {
					t.Fatalf("sample %v for %d chars", sample, whole.result.OutputChars)
				}
				if n := utf8.RuneCount(sample); int64(n) != whole.result.OutputChars {
					t.Fatalf("sample %q has %d runes, OutputChars %d", sample, n, whole.result.OutputChars)
				}
			}
			hiding := hide && (req.Format == FormatChat || req.Format == FormatCompletions)
			if !hiding || !bytes.Contains(in, usageKey) {
				if !bytes.Equal(whole.out, in) {
					t.Fatalf("limit %d: forwarded bytes differ:\n got %q\nwant %q", limit, whole.out, in)
				}
			}
			if hiding {
				if want := refHidden(in, limit); !bytes.Equal(whole.out, want) {
					t.Fatalf("limit %d: client got\n%q\nwant\n%q", limit, whole.out, want)
				}
			}
		}
	})
}

func FuzzParseRequest(f *testing.F) {
	for _, b := range []string{
		`{"model":"m","stream":true}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}`,
		`{"model":"m","stream":true,"stream_options":null,"max_tokens":10}`,
		`{"mod\u0065l":"m","stream":true,"stream\u005foptions":{"include_usage":true}}`,
		` {"model":"m","model":"n","stream":true,"max_completion_tokens":1.5e2}`,
		`{"model":4}`, `[]`, `{`,
	} {
		f.Add([]byte(b), uint8(FormatChat), true)
	}
	for _, b := range []string{
		`{"model":"m","tools":[{"type":"web_search"}],"input":"hi"}`,
		`{"model":"m","tools":[{"type":"function","function":{"name":"f"}}],"previous_response_id":"r"}`,
		`{"model":"m","input":[{"type":"item_reference","id":"x"}],"conversation":null}`,
		`{"model":"m","mcp_servers":[],"prompt":{"id":"p"}}`,
		`{"model":"m","tool\u0073":[{"type":"web_search_preview"}],"container":null}`,
		`{"model":"m","system":[{"text":"s","cache_control":{"type":"ephemeral","ttl":"1h"}}],"prompt":["a",[1]]}`,
	} {
		f.Add([]byte(b), uint8(FormatResponses), false)
		f.Add([]byte(b), uint8(FormatMessages), false)
	}
	f.Fuzz(func(t *testing.T, body []byte, format uint8, inject bool) {
		fm := Format(format % 6)
		orig := bytes.Clone(body)
		r, err := ParseRequest(fm, body, inject)
		if !bytes.Equal(body, orig) {
			t.Fatal("ParseRequest changed its input")
		}
		var m map[string]any
		jsonErr := json.Unmarshal(body, &m)
		if err != nil {
			if err == ErrInvalidJSON && jsonErr == nil && m != nil {
				t.Fatalf("valid object refused: %s", body)
			}
			return
		}
		if jsonErr != nil || m == nil {
			t.Fatalf("accepted what encoding/json refuses: %v", jsonErr)
		}
		// What ParseRequest's walk found the body lets the upstream read
		// is what a walk of the parsed body finds.
		walked := *r
		walked.reach = 0
		if got, want := beyondBody(r), beyondBody(&walked); got != want {
			t.Fatalf("reach %d from ParseRequest, %d from a walk of %s", got, want, body)
		}
		if utf8.Valid(body) && m["model"] != r.Model {
			t.Fatalf("model %q, encoding/json says %q", r.Model, m["model"])
		}
		if r.Model == "" || r.InputEstimate < 1 || r.MaxOutputTokens < 0 {
			t.Fatalf("bad request %+v", r)
		}
		if fm != FormatEmbeddings && (m["stream"] == true) != r.Stream {
			t.Fatalf("stream %v, encoding/json says %v", r.Stream, m["stream"])
		}
		if !r.InjectedUsage {
			if len(r.Body) != len(body) || (len(body) > 0 && &r.Body[0] != &body[0]) {
				t.Fatal("body rewritten without injection")
			}
			return
		}
		var m2 map[string]any
		if err := json.Unmarshal(r.Body, &m2); err != nil {
			t.Fatalf("rewritten body is not JSON: %v\n%s", err, r.Body)
		}
		opts, _ := m2["stream_options"].(map[string]any)
		if opts["include_usage"] != true {
			t.Fatalf("include_usage not set: %s", r.Body)
		}
		if old, ok := m["stream_options"].(map[string]any); ok {
			delete(old, "include_usage")
			delete(opts, "include_usage")
			if !reflect.DeepEqual(old, opts) {
				t.Fatalf("stream_options changed: %v -> %v", old, opts)
			}
		}
		delete(m, "stream_options")
		delete(m2, "stream_options")
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("rewrite changed the body:\n%s\n%s", body, r.Body)
		}
		again, err := ParseRequest(fm, r.Body, inject)
		if err != nil || !again.ClientWantsUsage || again.InjectedUsage || again.Model != r.Model {
			t.Fatalf("rewritten body reads back as %+v, %v", again, err)
		}
	})
}

type jsonRun struct {
	result Result
	wire   wireUsage
	out    []byte
}

func runJSON(t *testing.T, fm Format, pieces [][]byte) jsonRun {
	o := NewObserver(&Request{Format: fm})
	o.Start(200, "application/json")
	var out bytes.Buffer
	for _, p := range pieces {
		if err := o.Feed(&out, p); err != nil {
			t.Fatal(err)
		}
		if len(o.json.capture) > maxUsageJSON {
			t.Fatalf("capture over its bound: %d", len(o.json.capture))
		}
	}
	if err := o.Close(&out); err != nil {
		t.Fatal(err)
	}
	return jsonRun{o.Result(), o.json.usage, out.Bytes()}
}

// refUsage decodes the top-level usage of a valid JSON object with
// encoding/json: the last usage that is a report for fm wins.
func refUsage(body []byte, fm Format) (w wireUsage, has bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return w, false
	}
	for dec.More() {
		k, _ := dec.Token()
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return w, has
		}
		var u map[string]json.RawMessage
		if k != "usage" || json.Unmarshal(v, &u) != nil || u == nil {
			continue
		}
		count := func(m map[string]json.RawMessage, k string) optInt {
			raw, ok := m[k]
			if !ok {
				return optInt{}
			}
			return parseUsageCount(raw)
		}
		detail := func(k, sub string) optInt {
			var d map[string]json.RawMessage
			if raw, ok := u[k]; !ok || json.Unmarshal(raw, &d) != nil {
				return optInt{}
			}
			return count(d, sub)
		}
		n := wireUsage{
			prompt: count(u, "prompt_tokens"), completion: count(u, "completion_tokens"),
			hit: count(u, "prompt_cache_hit_tokens"), miss: count(u, "prompt_cache_miss_tokens"),
			promptCached: detail("prompt_tokens_details", "cached_tokens"), reasoning: detail("completion_tokens_details", "reasoning_tokens"),
			input: count(u, "input_tokens"), output: count(u, "output_tokens"),
			inputCached: detail("input_tokens_details", "cached_tokens"), outputReasoning: detail("output_tokens_details", "reasoning_tokens"),
			cacheCreation: count(u, "cache_creation_input_tokens"), cacheRead: count(u, "cache_read_input_tokens"),
		}
		if n.complete(fm) {
			w, has = n, true
		}
	}
	return w, has
}

func FuzzUsageJSON(f *testing.F) {
	seedFiles(f, ".json", func(b []byte, fm Format) { f.Add(b, uint64(1), uint8(fm)) })
	for _, fm := range allFormats { // every format, also those without a golden body
		f.Add([]byte(`{"choices":[{"text":"a\u00e9","message":{"content":"\ud83d\ude00\ud83d"}}],"content":[{"text":"b\n","thinking":"c"}],`+
			`"output":[{"content":[{"text":"d"}]}],"usage":{"prompt_tokens":2,"input_tokens":3,"output_tokens":1}}`), uint64(4), uint8(fm))
	}
	f.Add([]byte(`{"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":null,"usage":[1],"usage":{}}`), uint64(2), uint8(FormatChat))
	f.Add([]byte(`{"usage":{"prompt\u005ftokens":1,"completion_tokens":2.0,"completion_tokens":-1}}`), uint64(5), uint8(FormatChat))
	f.Add([]byte(`{"a":"\"}","usage":{"input_tokens":3,"cache_read_input_tokens":1e2,"output_tokens":4}}`), uint64(3), uint8(FormatMessages))
	f.Fuzz(func(t *testing.T, body []byte, seed uint64, format uint8) {
		if len(body) > maxUsageJSON {
			return
		}
		fm := Format(format % 6)
		whole := runJSON(t, fm, [][]byte{body})
		split := runJSON(t, fm, randomPieces(body, seed))
		if !reflect.DeepEqual(whole, split) {
			t.Fatalf("split changed the outcome:\nwhole %+v\nsplit %+v", whole, split)
		}
		if !bytes.Equal(whole.out, body) {
			t.Fatal("forwarded bytes differ")
		}
		if len(whole.result.OutputSample) > sampleCap {
			t.Fatalf("sample of %d bytes", len(whole.result.OutputSample))
		}
		var v any
		valid := json.Unmarshal(body, &v) == nil
		shallow := strings.Count(string(body), "{")+strings.Count(string(body), "[") < 60
		if valid && utf8.Valid(body) && shallow {
			ref, _ := v.(map[string]any)
			want := ""
			if ref != nil {
				want = refSample(t, body)
			}
			got := string(whole.result.OutputSample)
			if len(want) <= sampleCap && got != want ||
				len(want) > sampleCap && (!strings.HasPrefix(want, got) || len(got) < sampleCap-utf8.UTFMax) {
				t.Fatalf("sample\n got %q\nwant %q", got, want)
			}
		}
		if !valid || bytes.Contains(body, []byte(`\u`)) {
			return
		}
		obj, isObj := v.(map[string]any)
		if !isObj {
			if whole.result.Outcome != OutcomeStreamError && whole.result.Outcome != OutcomeCutOff {
				t.Fatalf("outcome %s for a non-object", whole.result.Outcome)
			}
			return
		}
		want := OutcomeCompleted
		if obj["error"] != nil {
			want = OutcomeUpstreamError
		}
		if whole.result.Outcome != want {
			t.Fatalf("outcome %s, want %s", whole.result.Outcome, want)
		}
		ref, has := refUsage(body, fm)
		if has != whole.result.HasUsage || (has && ref != whole.wire) {
			t.Fatalf("usage\n got %v %+v\nwant %v %+v", whole.result.HasUsage, whole.wire, has, ref)
		}
		if utf8.Valid(body) && shallow {
			if got, want := whole.result.OutputChars, int64(utf8.RuneCountInString(refSample(t, body))); got != want {
				t.Fatalf("chars %d, want %d", got, want)
			}
		}
	})
}

// refSample is the generated text of a valid JSON object, decoded by
// encoding/json: in document order, every string that is the direct value
// of a text key whose name has no escape.
func refSample(t *testing.T, body []byte) string {
	type frame struct{ obj, wantKey bool }
	var stack []frame
	var out strings.Builder
	dec := json.NewDecoder(bytes.NewReader(body))
	var key string
	keyEscaped := false
	prev := int64(0)
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out.String()
		}
		if err != nil {
			t.Fatalf("refSample: %v", err)
		}
		off := dec.InputOffset()
		raw := body[prev:off]
		prev = off
		var top *frame
		if len(stack) > 0 {
			top = &stack[len(stack)-1]
		}
		switch tok := tok.(type) {
		case json.Delim:
			switch tok {
			case '{', '[':
				stack = append(stack, frame{obj: tok == '{', wantKey: tok == '{'})
			default:
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].obj {
					stack[len(stack)-1].wantKey = true
				}
			}
		default:
			if top == nil || !top.obj {
				continue
			}
			if top.wantKey {
				key, _ = tok.(string)
				keyEscaped = bytes.IndexByte(raw, '\\') >= 0
				top.wantKey = false
				continue
			}
			if s, ok := tok.(string); ok && !keyEscaped && textKey([]byte(key)) {
				out.WriteString(s)
			}
			top.wantKey = true
		}
	}
}

// FuzzEstimateInput checks that the estimates never panic and stay in
// range, through the real tokenizers. Their regexp engine offers the fuzzer
// a vast coverage space, and minimizing each new input (60 s by default)
// stalls it, so run it with a short minimization:
//
//	go test -run '^$' -fuzz FuzzEstimateInput -fuzzminimizetime 100x ./meter/
func FuzzEstimateInput(f *testing.F) {
	names, _ := filepath.Glob(filepath.Join("..", "testdata", "meter", "requests", "*.json"))
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(formatOfFile(filepath.Base(name))), uint8(0))
	}
	for _, fm := range allFormats {
		f.Add([]byte(`{"messages":[{"content":[{"type":"tool_use","input":{"a":[1]},"content":[{"text":"x"}]}]}],"prompt":[[1],2,"s"],"input":[{"content":"y"}],"tools":[{"function":{"name":"n"}}],"system":null}`), uint8(fm), uint8(1))
	}
	f.Add([]byte(`{"input":`+strings.Repeat(`[`, 50)+strings.Repeat(`]`, 50)+`}`), uint8(FormatEmbeddings), uint8(2))
	f.Add([]byte("\xff\xfe not json"), uint8(FormatChat), uint8(1))
	f.Add([]byte(`{"mess\u0061ges":[{"role":"user","content":"a\u00e9"}],"messages":[{"content":"b","content":[{"text":"c"}]}],"tools":[null,{"function":null},{"function":{"name":"f"}}]}`), uint8(FormatChat), uint8(0))
	models := []string{"gpt-4o", "gpt-4", "deepseek-chat", "claude-sonnet-4-5"}
	f.Fuzz(func(t *testing.T, body []byte, format, model uint8) {
		if len(body) > 1<<16 {
			return
		}
		fm, m := Format(format%6), models[int(model)%len(models)]
		orig := bytes.Clone(body)
		n := EstimateInput(fm, m, body)
		if n < 0 || n > maxCount || !bytes.Equal(body, orig) {
			t.Fatalf("EstimateInput = %d", n)
		}
		if again := EstimateInput(fm, m, body); again != n {
			t.Fatalf("EstimateInput not deterministic: %d then %d", n, again)
		}
		if fm != FormatUnknown && !json.Valid(body) && n != CountTokens(m, body) {
			t.Fatalf("invalid JSON: %d, want the whole body counted", n)
		}
		// The walk gathers what encoding/json decodes (which replaces invalid
		// UTF-8, so only valid UTF-8 compares).
		if utf8.Valid(body) {
			got, ok := gatherPrompt(fm, body)
			want, wantOK := refGatherPrompt(fm, body)
			if ok != wantOK || !bytes.Equal(got.text, want.text) || got.extra != want.extra {
				t.Fatalf("gathered %v %q %d\nencoding/json %v %q %d", ok, got.text, got.extra, wantOK, want.text, want.extra)
			}
		}
		// The output side, with the fuzzed bytes as a sample.
		sample := body[:min(len(body), sampleCap)]
		for _, chars := range []int64{0, int64(len(sample)), 1 << 50} {
			if out := EstimateOutput(m, Result{OutputChars: chars, OutputSample: sample}); out < 0 || out > maxCount {
				t.Fatalf("EstimateOutput(%d chars) = %d", chars, out)
			}
		}
	})
}

func TestFormatOfFile(t *testing.T) {
	for name, want := range map[string]Format{
		"chat_stream_openai.sse": FormatChat, "completions_json.json": FormatCompletions, "embeddings.json": FormatEmbeddings, "x.json": FormatUnknown,
		"embeddings_ids.json": FormatEmbeddings, "responses_items.json": FormatResponses, "messages_error.sse": FormatMessages,
	} {
		if got := formatOfFile(name); got != want {
			t.Errorf("%s: %v", name, got)
		}
	}
}

// refPrompt is gatherPrompt written plainly with encoding/json, decoding
// every level: the reference FuzzEstimateInput checks the walk against.
type refPrompt struct {
	text  []byte
	extra int64
}

func refGatherPrompt(f Format, body []byte) (t refPrompt, ok bool) {
	if f == FormatUnknown {
		return t, true
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil || top == nil {
		return t, false
	}
	switch f {
	case FormatChat:
		t.messages(top["messages"], true)
		t.tools(top["tools"])
		t.tools(top["functions"])
	case FormatCompletions:
		t.content(top["prompt"], 0)
		t.content(top["suffix"], 0)
	case FormatEmbeddings:
		t.content(top["input"], 0)
	case FormatResponses:
		t.content(top["instructions"], 0)
		t.content(top["input"], 0)
		t.tools(top["tools"])
	case FormatMessages:
		t.content(top["system"], 0)
		t.messages(top["messages"], false)
		t.tools(top["tools"])
	}
	return t, true
}

func (t *refPrompt) add(s string) {
	if s == "" {
		return
	}
	if len(t.text) > 0 {
		t.text = append(t.text, '\n')
	}
	t.text = append(t.text, s...)
}

func (t *refPrompt) addJSON(raw json.RawMessage) {
	if len(raw) == 0 || string(raw) == "null" {
		return
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) == nil {
		t.add(b.String())
	}
}

// objects decodes an array of objects; elements that are not objects are
// left out.
func objects(raw json.RawMessage) (out []map[string]json.RawMessage, isArray bool) {
	var items []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return nil, false
	}
	for _, it := range items {
		var m map[string]json.RawMessage
		if json.Unmarshal(it, &m) == nil && m != nil {
			out = append(out, m)
		}
	}
	return out, true
}

func (t *refPrompt) messages(raw json.RawMessage, chat bool) {
	msgs, ok := objects(raw)
	if !ok {
		return
	}
	for _, msg := range msgs {
		t.extra += tokensPerMessage
		t.add(refStr(msg["role"]))
		t.content(msg["content"], 0)
		if chat {
			t.add(refStr(msg["name"]))
			calls, _ := objects(msg["tool_calls"])
			for _, c := range calls {
				t.function(c["function"])
			}
			t.function(msg["function_call"])
		}
	}
	t.extra += tokensPerReply
}

func (t *refPrompt) function(raw json.RawMessage) {
	var fn map[string]json.RawMessage
	if json.Unmarshal(raw, &fn) != nil {
		return
	}
	t.add(refStr(fn["name"]))
	t.add(refStr(fn["arguments"]))
}

func (t *refPrompt) tools(raw json.RawMessage) {
	tools, _ := objects(raw)
	for _, tool := range tools {
		if fn, ok := tool["function"]; ok {
			tool = nil
			if json.Unmarshal(fn, &tool) != nil {
				continue
			}
		}
		t.add(refStr(tool["name"]))
		t.add(refStr(tool["description"]))
		t.addJSON(tool["parameters"])
		t.addJSON(tool["input_schema"])
	}
}

func (t *refPrompt) content(raw json.RawMessage, depth int) {
	if len(raw) == 0 || depth > maxContentDepth {
		return
	}
	switch raw[0] {
	case '"':
		t.add(refStr(raw))
	case '[':
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) != nil {
			return
		}
		for _, it := range items {
			t.content(it, depth+1)
		}
	case '{':
		var p map[string]json.RawMessage
		if json.Unmarshal(raw, &p) != nil {
			return
		}
		t.add(refStr(p["text"]))
		t.add(refStr(p["refusal"]))
		t.add(refStr(p["thinking"]))
		t.add(refStr(p["name"]))
		t.add(refStr(p["arguments"]))
		if in, ok := p["input"]; ok && strings.HasSuffix(refStr(p["type"]), "tool_use") {
			t.addJSON(in)
		}
		t.add(refStr(p["role"]))
		t.content(p["content"], depth+1)
		t.content(p["output"], depth+1)
		t.content(p["summary"], depth+1)
	case 'n', 't', 'f':
	default:
		t.extra++
	}
}

func refStr(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// FuzzBill checks that a bill stays within what the request could produce,
// whatever the report, and that a report within it is billed as is.
func FuzzBill(f *testing.F) {
	f.Add([]byte(`{"model":"m","previous_response_id":"r","tools":[{"type":"web_search"}]}`), uint8(FormatResponses),
		int64(1), int64(0), int64(10), int64(1<<40), int64(5), int64(3), int64(1), int64(7), true, uint8(0))
	f.Add([]byte(`{"model":"m"}`), uint8(FormatEmbeddings), int64(-3), int64(2), int64(0), int64(-1), int64(0), int64(0), int64(-9), int64(9), false, uint8(3))
	f.Fuzz(func(t *testing.T, body []byte, format uint8, choices, media, limit, in, cached, write, out, reasoning int64, has bool, end uint8) {
		fm := Format(format % 6)
		req := &Request{Format: fm, Model: "m", Choices: choices, MediaParts: media, Body: body}
		res := Result{HasUsage: has, Outcome: OutcomeCompleted, OutputChars: out,
			Usage: Usage{InputTokens: in, CachedInputTokens: cached, CacheWriteTokens: write, OutputTokens: out, ReasoningTokens: reasoning}}
		terms := BillTerms{Outcome: []Outcome{OutcomeCompleted, OutcomeCutOff, OutcomeClientGone, OutcomeUpstreamError}[end%4],
			Status: []int{200, 500}[end/4%2], Answered: end/8%2 == 0, OutputLimit: limit, MinInput: reasoning}
		b := Bill(req, res, terms)
		u := b.Usage
		outMax := outputBound(req, limit)
		if fm != FormatEmbeddings && has {
			// What passed is billed even over the limit.
			outMax = max(outMax, EstimateOutput(req.Model, res))
		}
		inMax := max(inputBound(req), min(terms.MinInput, maxCount))
		if u.OutputTokens < 0 || u.OutputTokens > outMax || u.InputTokens < 0 || u.InputTokens > inMax ||
			u.CachedInputTokens < 0 || u.CachedInputTokens > u.InputTokens || u.CacheWriteTokens < 0 ||
			u.CachedInputTokens+u.CacheWriteTokens > u.InputTokens || u.ReasoningTokens < 0 || u.ReasoningTokens > u.OutputTokens {
			t.Fatalf("bill %+v out of bounds (output <= %d, input <= %d)", b, outMax, inMax)
		}
		if fm != FormatEmbeddings && limit > 0 && choices <= 1 && outputBound(req, limit) != min(limit, maxCount) {
			t.Fatalf("output bound %d for limit %d", outMax, limit)
		}
		sane := res.Usage.InputTokens >= 0 && res.Usage.InputTokens <= inputBound(req) && res.Usage.OutputTokens >= 0 &&
			res.Usage.OutputTokens <= outputBound(req, limit) && res.Usage.CachedInputTokens >= 0 && res.Usage.CacheWriteTokens >= 0 &&
			res.Usage.CachedInputTokens+res.Usage.CacheWriteTokens <= res.Usage.InputTokens &&
			res.Usage.ReasoningTokens >= 0 && res.Usage.ReasoningTokens <= res.Usage.OutputTokens
		if has && terms.Outcome == OutcomeCompleted && terms.MinInput <= res.Usage.InputTokens {
			if sane != !b.Clamped || sane && u != res.Usage || b.Estimated {
				t.Fatalf("report %+v (within bounds: %v) billed %+v", res.Usage, sane, b)
			}
		}
		if !has && b.Clamped {
			t.Fatalf("an estimate marked clamped: %+v", b)
		}
	})
}
