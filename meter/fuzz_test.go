package meter

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// seedFiles adds the golden transcripts (and their CR and CRLF forms for
// SSE) to a fuzz corpus.
func seedFiles(f *testing.F, ext string, add func(b []byte)) {
	names, _ := filepath.Glob(filepath.Join("..", "testdata", "meter", "*"+ext))
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		add(b)
		if ext == ".sse" {
			add(lineEndings(b, "\r\n"))
			add(lineEndings(b, "\r"))
		}
	}
}

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

func runSSE(t *testing.T, req *Request, pieces [][]byte) sseRun {
	o := NewObserver(req)
	o.Start(200, "text/event-stream")
	var run sseRun
	o.onEvent = func(ev, data []byte) { run.events = append(run.events, string(ev)+"|"+string(data)) }
	var out bytes.Buffer
	for _, p := range pieces {
		if err := o.Feed(&out, p); err != nil {
			t.Fatal(err)
		}
		if len(o.line) > maxLine || len(o.data) > maxLine || len(o.event) > maxEventName {
			t.Fatalf("buffers over their bound: line %d data %d event %d", len(o.line), len(o.data), len(o.event))
		}
	}
	if err := o.Close(&out); err != nil {
		t.Fatal(err)
	}
	run.result, run.out = o.Result(), out.Bytes()
	return run
}

// refEvents frames b the plain way, all in memory, per the SSE spec.
func refEvents(b []byte) []string {
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
	var events []string
	var ev, data []byte
	has := false
	for _, l := range lines {
		if len(l) == 0 {
			if has {
				events = append(events, string(ev)+"|"+string(data))
			}
			ev, data, has = nil, nil, false
			continue
		}
		if l[0] == ':' {
			continue
		}
		name, val, _ := bytes.Cut(l, []byte(":"))
		val = bytes.TrimPrefix(val, []byte(" "))
		switch string(name) {
		case "data":
			if has {
				data = append(data, '\n')
			}
			data, has = append(data, val...), true
		case "event":
			ev = append([]byte(nil), val[:min(len(val), maxEventName)]...)
		}
	}
	return events
}

// refHidden is what a client gets from b when the usage-only chunk is
// hidden, worked out on the whole input at once: a data line that is the
// first field of its event and a usage-only chunk goes, with the blank line
// right after it. A trailing partial line is kept.
func refHidden(b []byte) []byte {
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
			drop = !hasData && !inEvent && usageOnlyChunk(val)
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
	seedFiles(f, ".sse", func(b []byte) {
		f.Add(b, uint64(1), false, uint8(FormatChat))
		f.Add(b, uint64(5), true, uint8(FormatChat))
	})
	f.Add([]byte("data: x\r"), uint64(0), true, uint8(FormatMessages))
	f.Add([]byte("data:{\"choices\":[],\"usage\":{}}\r\r\rdata: [DONE]\n\n"), uint64(3), true, uint8(FormatCompletions))
	f.Fuzz(func(t *testing.T, in []byte, seed uint64, hide bool, format uint8) {
		if len(in) > 1<<16 {
			return
		}
		req := &Request{Format: Format(format % 6), Stream: true, InjectedUsage: hide}
		whole := runSSE(t, req, [][]byte{in})
		split := runSSE(t, req, randomPieces(in, seed))
		if !reflect.DeepEqual(whole, split) {
			t.Fatalf("split changed the outcome:\nwhole %+v\nsplit %+v", whole, split)
		}
		if ref := refEvents(in); !reflect.DeepEqual(whole.events, ref) && !(len(ref) == 0 && len(whole.events) == 0) {
			t.Fatalf("events\n got %q\nwant %q", whole.events, ref)
		}
		hiding := hide && (req.Format == FormatChat || req.Format == FormatCompletions)
		if !hiding || !bytes.Contains(in, usageKey) {
			if !bytes.Equal(whole.out, in) {
				t.Fatalf("forwarded bytes differ:\n got %q\nwant %q", whole.out, in)
			}
		}
		if hiding {
			if want := refHidden(in); !bytes.Equal(whole.out, want) {
				t.Fatalf("client got\n%q\nwant\n%q", whole.out, want)
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
// encoding/json: the last usage that is an object wins.
func refUsage(body []byte) (w wireUsage, has bool) {
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
			return parseCount(raw)
		}
		detail := func(k, sub string) optInt {
			var d map[string]json.RawMessage
			if raw, ok := u[k]; !ok || json.Unmarshal(raw, &d) != nil {
				return optInt{}
			}
			return count(d, sub)
		}
		w = wireUsage{
			prompt: count(u, "prompt_tokens"), completion: count(u, "completion_tokens"),
			hit: count(u, "prompt_cache_hit_tokens"), miss: count(u, "prompt_cache_miss_tokens"),
			promptCached: detail("prompt_tokens_details", "cached_tokens"), reasoning: detail("completion_tokens_details", "reasoning_tokens"),
			input: count(u, "input_tokens"), output: count(u, "output_tokens"),
			inputCached: detail("input_tokens_details", "cached_tokens"), outputReasoning: detail("output_tokens_details", "reasoning_tokens"),
			cacheCreation: count(u, "cache_creation_input_tokens"), cacheRead: count(u, "cache_read_input_tokens"),
		}
		has = true
	}
	return w, has
}

// refChars counts the characters of the strings that are the direct value
// of a text key, anywhere in v.
func refChars(v any) int64 {
	var n int64
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && textKey([]byte(k)) {
				n += int64(utf8.RuneCountInString(s))
			}
			n += refChars(x)
		}
	case []any:
		for _, x := range v {
			n += refChars(x)
		}
	}
	return n
}

func FuzzUsageJSON(f *testing.F) {
	seedFiles(f, ".json", func(b []byte) { f.Add(b, uint64(1), uint8(FormatChat)) })
	f.Add([]byte(`{"usage":{"prompt_tokens":1},"usage":null,"usage":[1]}`), uint64(2), uint8(FormatChat))
	f.Add([]byte(`{"a":"\"}","usage":{"input_tokens":3,"cache_read_input_tokens":1e2}}`), uint64(3), uint8(FormatMessages))
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
		var v any
		if json.Unmarshal(body, &v) != nil || bytes.Contains(body, []byte(`\u`)) {
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
		ref, has := refUsage(body)
		if has != whole.result.HasUsage || (has && ref != whole.wire) {
			t.Fatalf("usage\n got %v %+v\nwant %v %+v", whole.result.HasUsage, whole.wire, has, ref)
		}
		if utf8.Valid(body) && strings.Count(string(body), "{")+strings.Count(string(body), "[") < 60 {
			if got, want := whole.result.OutputChars, refChars(v); got != want {
				t.Fatalf("chars %d, want %d", got, want)
			}
		}
	})
}
