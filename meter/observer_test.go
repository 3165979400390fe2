package meter

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

const sseType = "text/event-stream; charset=utf-8"

type transcript struct {
	file   string
	format Format
	ct     string
	status int
	inject bool   // the gateway injected include_usage
	wants  bool   // the client asked for usage itself
	client string // golden of the bytes the client gets; "" means the input itself
	want   Result
}

var transcripts = []transcript{
	{
		file: "chat_stream_openai.sse", format: FormatChat, ct: sseType, status: 200,
		want: Result{Usage: Usage{InputTokens: 1200, CachedInputTokens: 1024, OutputTokens: 310, ReasoningTokens: 256},
			HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 16, Stream: true},
	},
	{
		file: "chat_stream_openai.sse", format: FormatChat, ct: sseType, status: 200, inject: true,
		client: "chat_stream_openai.client.sse",
		want: Result{Usage: Usage{InputTokens: 1200, CachedInputTokens: 1024, OutputTokens: 310, ReasoningTokens: 256},
			HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 16, Stream: true},
	},
	{
		file: "chat_stream_openai.sse", format: FormatChat, ct: sseType, status: 200, inject: true, wants: true,
		want: Result{Usage: Usage{InputTokens: 1200, CachedInputTokens: 1024, OutputTokens: 310, ReasoningTokens: 256},
			HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 16, Stream: true},
	},
	{
		// Usage on a content chunk is never hidden; the early all-zero usage loses.
		file: "chat_stream_deepseek.sse", format: FormatChat, ct: "text/event-stream", status: 200, inject: true,
		want: Result{Usage: Usage{InputTokens: 5000, CachedInputTokens: 4608, OutputTokens: 900, ReasoningTokens: 700},
			HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 27, Stream: true},
	},
	{
		file: "completions_stream.sse", format: FormatCompletions, ct: sseType, status: 200, inject: true,
		client: "completions_stream.client.sse",
		want: Result{Usage: Usage{InputTokens: 5, OutputTokens: 2},
			HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 9, Stream: true},
	},
	{
		file: "chat_stream_error.sse", format: FormatChat, ct: sseType, status: 200, inject: true,
		want: Result{Outcome: OutcomeStreamError, OutputChars: 3, Stream: true},
	},
	{
		file: "chat_stream_cut.sse", format: FormatChat, ct: sseType, status: 200, inject: true,
		want: Result{Outcome: OutcomeCutOff, OutputChars: 9, Stream: true},
	},
	{
		file: "messages_stream.sse", format: FormatMessages, ct: sseType, status: 200,
		want: Result{Usage: Usage{InputTokens: 9520, CachedInputTokens: 8000, CacheWriteTokens: 1500, OutputTokens: 57},
			HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 14, Stream: true},
	},
	{
		file: "messages_error.sse", format: FormatMessages, ct: sseType, status: 200,
		want: Result{Usage: Usage{InputTokens: 15, CachedInputTokens: 5, OutputTokens: 1},
			HasUsage: true, Outcome: OutcomeStreamError, OutputChars: 3, Stream: true},
	},
	{
		file: "responses_stream.sse", format: FormatResponses, ct: sseType, status: 200,
		want: Result{Usage: Usage{InputTokens: 900, CachedInputTokens: 512, OutputTokens: 120, ReasoningTokens: 64},
			HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 10, Stream: true},
	},
	{
		file: "responses_failed.sse", format: FormatResponses, ct: sseType, status: 200,
		want: Result{Outcome: OutcomeStreamError, OutputChars: 1, Stream: true},
	},
	{
		file: "chat_json_openai.json", format: FormatChat, ct: "application/json", status: 200,
		want: Result{Usage: Usage{InputTokens: 1200, CachedInputTokens: 1024, OutputTokens: 310, ReasoningTokens: 256},
			HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 3},
	},
	{
		file: "chat_json_deepseek.json", format: FormatChat, ct: "application/json", status: 200,
		want: Result{Usage: Usage{InputTokens: 5000, CachedInputTokens: 4608, OutputTokens: 900, ReasoningTokens: 700},
			HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 18},
	},
	{
		file: "messages_json.json", format: FormatMessages, ct: "application/json", status: 200,
		want: Result{Usage: Usage{InputTokens: 9520, CachedInputTokens: 8000, CacheWriteTokens: 1500, OutputTokens: 57},
			HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 9},
	},
	{
		file: "responses_json.json", format: FormatResponses, ct: "application/json", status: 200,
		want: Result{Usage: Usage{InputTokens: 900, CachedInputTokens: 512, OutputTokens: 120, ReasoningTokens: 64},
			HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 15},
	},
	{
		file: "completions_json.json", format: FormatCompletions, ct: "application/json", status: 200,
		want: Result{Usage: Usage{InputTokens: 5, OutputTokens: 7}, HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 17},
	},
	{
		file: "embeddings.json", format: FormatEmbeddings, ct: "application/json", status: 200,
		want: Result{Usage: Usage{InputTokens: 8}, HasUsage: true, Outcome: OutcomeCompleted},
	},
	{
		// An upstream error still reports usage when the body has some.
		file: "chat_json_openai.json", format: FormatChat, ct: "application/json", status: 500,
		want: Result{Usage: Usage{InputTokens: 1200, CachedInputTokens: 1024, OutputTokens: 310, ReasoningTokens: 256},
			HasUsage: true, Outcome: OutcomeUpstreamError, OutputChars: 3},
	},
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "meter", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// observe runs an Observer over pieces and returns its result and what the
// client got.
func observe(t testing.TB, req *Request, status int, ct string, pieces [][]byte) (Result, []byte) {
	t.Helper()
	o := NewObserver(req)
	o.Start(status, ct)
	var out bytes.Buffer
	for _, p := range pieces {
		if err := o.Feed(&out, p); err != nil {
			t.Fatal(err)
		}
		if len(o.line) > maxLine || len(o.data) > maxLine || len(o.json.capture) > maxUsageJSON {
			t.Fatalf("buffers over their bound: line %d data %d capture %d", len(o.line), len(o.data), len(o.json.capture))
		}
	}
	if err := o.Close(&out); err != nil {
		t.Fatal(err)
	}
	// Every test's Observer goes back to the pool, so the next one may be
	// a reused Observer: what Free keeps must not leak into it.
	res := o.Result()
	res.OutputSample = bytes.Clone(res.OutputSample)
	o.Free()
	return res, out.Bytes()
}

// TestFreeResets resets, as Free does before pooling them, Observers caught
// in the middle of every transcript (a partial line held, a usage value
// half captured, text sampled) and finds nothing left but empty buffers.
func TestFreeResets(t *testing.T) {
	for _, tc := range transcripts {
		in := readTestdata(t, tc.file)
		for _, cut := range []int{len(in) / 3, len(in) - 7, len(in)} {
			req := &Request{Format: tc.format, Stream: tc.want.Stream, InjectedUsage: tc.inject, ClientWantsUsage: tc.wants}
			o := NewObserver(req)
			o.Start(tc.status, tc.ct)
			if err := o.Feed(io.Discard, in[:cut]); err != nil {
				t.Fatal(err)
			}
			o.reset()
			for _, b := range [][]byte{o.line, o.data, o.event, o.json.capture, o.json.sample.buf, o.sample.buf} {
				if len(b) != 0 {
					t.Fatalf("%s cut at %d: a freed Observer keeps %q", tc.file, cut, b)
				}
			}
			o.line, o.data, o.event, o.json.capture, o.json.sample.buf, o.sample.buf = nil, nil, nil, nil, nil, nil
			if !reflect.DeepEqual(*o, Observer{}) {
				t.Fatalf("%s cut at %d: a freed Observer is not reset: %+v", tc.file, cut, *o)
			}
		}
	}
}

// splits returns the ways a body is cut into Feeds in the tests: whole, one
// byte at a time, and random pieces.
func splits(b []byte, seed uint64) map[string][][]byte {
	m := map[string][][]byte{"whole": {b}}
	ones := make([][]byte, len(b))
	for i := range b {
		ones[i] = b[i : i+1]
	}
	m["bytes"] = ones
	r := rand.New(rand.NewPCG(seed, 7))
	for n := range 5 {
		var pieces [][]byte
		for rest := b; len(rest) > 0; {
			k := min(len(rest), 1+r.IntN(40))
			pieces = append(pieces, rest[:k])
			rest = rest[k:]
		}
		m["random"+string(rune('0'+n))] = pieces
	}
	return m
}

func TestTranscripts(t *testing.T) {
	for _, tc := range transcripts {
		name := tc.file + "/" + tc.format.String()
		if tc.inject {
			name += "/injected"
		}
		if tc.wants {
			name += "/client-wants"
		}
		t.Run(name, func(t *testing.T) {
			in := readTestdata(t, tc.file)
			want := in
			if tc.client != "" {
				want = readTestdata(t, tc.client)
			}
			req := &Request{Format: tc.format, Stream: tc.want.Stream, InjectedUsage: tc.inject, ClientWantsUsage: tc.wants}
			for how, pieces := range splits(in, uint64(len(in))) {
				got, out := observe(t, req, tc.status, tc.ct, pieces)
				if !sameResult(got, tc.want) {
					t.Errorf("%s: result\n got %+v\nwant %+v", how, got, tc.want)
				}
				if !bytes.Equal(out, want) {
					t.Errorf("%s: client got\n%q\nwant\n%q", how, out, want)
				}
			}
		})
	}
}

func TestJSONBodies(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format Format
		status int
		body   string
		want   Result
	}{
		{"cut", FormatChat, 200, `{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}`,
			Result{Usage: Usage{InputTokens: 3, OutputTokens: 1}, HasUsage: true, Outcome: OutcomeCutOff}},
		{"empty", FormatChat, 200, ``, Result{Outcome: OutcomeCutOff}},
		{"not json", FormatChat, 200, `<html>bad gateway</html>`, Result{Outcome: OutcomeStreamError}},
		{"array", FormatChat, 200, `[{"usage":{"prompt_tokens":3}}]`, Result{Outcome: OutcomeStreamError}},
		{"upstream error", FormatChat, 429, `{"error":{"message":"slow down","code":"rate_limit_exceeded"}}`,
			Result{Outcome: OutcomeUpstreamError}},
		{"error in 200", FormatChat, 200, `{"error":{"message":"no"}}`, Result{Outcome: OutcomeUpstreamError}},
		{"error null", FormatResponses, 200, `{"error": null, "usage" : {"input_tokens":2,"output_tokens":1} }`,
			Result{Usage: Usage{InputTokens: 2, OutputTokens: 1}, HasUsage: true, Outcome: OutcomeCompleted}},
		{"nested usage ignored", FormatChat, 200, `{"choices":[{"usage":{"prompt_tokens":9}}],"x":{"usage":{"prompt_tokens":9}}}`,
			Result{Outcome: OutcomeCompleted}},
		{"last usage wins", FormatChat, 200, `{"usage":{"prompt_tokens":9,"completion_tokens":1},"usage":{"prompt_tokens":4,"completion_tokens":2}}`,
			Result{Usage: Usage{InputTokens: 4, OutputTokens: 2}, HasUsage: true, Outcome: OutcomeCompleted}},
		// An object without the counts is no report: it neither bills 0 as
		// exact nor replaces a report before it.
		{"empty usage", FormatChat, 200, `{"usage":{}}`, Result{Outcome: OutcomeCompleted}},
		{"total only", FormatChat, 200, `{"usage":{"total_tokens":5000}}`, Result{Outcome: OutcomeCompleted}},
		{"input only", FormatChat, 200, `{"usage":{"prompt_tokens":5000}}`, Result{Outcome: OutcomeCompleted}},
		{"string counts", FormatChat, 200, `{"usage":{"prompt_tokens":"12","completion_tokens":"3"}}`, Result{Outcome: OutcomeCompleted}},
		{"fractional count", FormatChat, 200, `{"usage":{"prompt_tokens":12.5,"completion_tokens":3}}`, Result{Outcome: OutcomeCompleted}},
		{"negative count", FormatChat, 200, `{"usage":{"prompt_tokens":12,"completion_tokens":-3}}`, Result{Outcome: OutcomeCompleted}},
		{"later non-report ignored", FormatChat, 200, `{"usage":{"prompt_tokens":4,"completion_tokens":2},"usage":{}}`,
			Result{Usage: Usage{InputTokens: 4, OutputTokens: 2}, HasUsage: true, Outcome: OutcomeCompleted}},
		{"responses needs output_tokens", FormatResponses, 200, `{"usage":{"input_tokens":4,"total_tokens":9}}`, Result{Outcome: OutcomeCompleted}},
		{"messages needs input_tokens", FormatMessages, 200, `{"usage":{"output_tokens":4,"cache_read_input_tokens":9}}`, Result{Outcome: OutcomeCompleted}},
		{"embeddings input alone", FormatEmbeddings, 200, `{"usage":{"prompt_tokens":4,"total_tokens":4}}`,
			Result{Usage: Usage{InputTokens: 4}, HasUsage: true, Outcome: OutcomeCompleted}},
		{"embeddings without input", FormatEmbeddings, 200, `{"usage":{"total_tokens":4}}`, Result{Outcome: OutcomeCompleted}},
		{"null usage", FormatChat, 200, `{"usage":null}`, Result{Outcome: OutcomeCompleted}},
		{"usage tricky strings", FormatChat, 200, `{"a":"}\",{","usage":{"prompt_tokens":7,"x":"}]\\","completion_tokens":0},"b":1}`,
			Result{Usage: Usage{InputTokens: 7}, HasUsage: true, Outcome: OutcomeCompleted}},
		{"usage too big", FormatChat, 200, `{"usage":{"prompt_tokens":7,"pad":"` + string(bytes.Repeat([]byte("a"), maxUsageJSON)) + `"}}`,
			Result{Outcome: OutcomeCompleted}},
		{"trailing bytes", FormatChat, 200, "{\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":0}}\n\ngarbage",
			Result{Usage: Usage{InputTokens: 7}, HasUsage: true, Outcome: OutcomeCompleted}},
		{"escaped content", FormatChat, 200, `{"choices":[{"message":{"content":"a\"\\\n\u00e9\ud83d\ude00é"}}]}`,
			Result{Outcome: OutcomeCompleted, OutputChars: 7}},
		{"deep nesting", FormatChat, 200, string(bytes.Repeat([]byte(`{"a":[`), 100)) + string(bytes.Repeat([]byte(`]}`), 100)),
			Result{Outcome: OutcomeCompleted}},
		{"deep cut", FormatChat, 200, `{"usage":{"prompt_tokens":1,"completion_tokens":0},"x":` + string(bytes.Repeat([]byte(`{"a":[`), 100)),
			Result{Usage: Usage{InputTokens: 1}, HasUsage: true, Outcome: OutcomeCutOff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for how, pieces := range splits([]byte(tc.body), 5) {
				got, out := observe(t, &Request{Format: tc.format}, tc.status, "application/json", pieces)
				if !sameResult(got, tc.want) {
					t.Errorf("%s: got %+v, want %+v", how, got, tc.want)
				}
				if string(out) != tc.body {
					t.Errorf("%s: client got %q", how, out)
				}
			}
		})
	}
}

func TestStartContentType(t *testing.T) {
	for _, tc := range []struct {
		ct     string
		stream bool
		sse    bool
	}{
		{"text/event-stream", false, true},
		{"Text/Event-Stream; charset=utf-8", false, true},
		{"application/json", true, false},
		{"", true, true},
		{"", false, false},
		{"text/event", true, false},
	} {
		o := NewObserver(&Request{Format: FormatChat, Stream: tc.stream})
		o.Start(200, tc.ct)
		if o.Result().Stream != tc.sse {
			t.Errorf("%q stream=%v: sse %v, want %v", tc.ct, tc.stream, !tc.sse, tc.sse)
		}
	}
}

type failWriter struct{ n int }

var errWrite = errors.New("client gone")

func (w *failWriter) Write(p []byte) (int, error) {
	w.n++
	return 0, errWrite
}

func TestWriteError(t *testing.T) {
	in := readTestdata(t, "chat_stream_openai.sse")
	for _, inject := range []bool{false, true} {
		o := NewObserver(&Request{Format: FormatChat, Stream: true, InjectedUsage: inject})
		o.Start(200, sseType)
		w := &failWriter{}
		for _, p := range chop(in, 50) {
			// Nothing is written (so no error) while a first partial line is held back.
			if err := o.Feed(w, p); !errors.Is(err, errWrite) && w.n > 0 {
				t.Fatalf("Feed returned %v", err)
			}
		}
		if err := o.Close(w); !errors.Is(err, errWrite) {
			t.Fatalf("Close returned %v", err)
		}
		if w.n != 1 {
			t.Errorf("%d writes after the first error", w.n-1)
		}
		if r := o.Result(); !r.HasUsage || r.Outcome != OutcomeCompleted {
			t.Errorf("metering stopped: %+v", r)
		}
	}
}

func TestFeedWithoutStart(t *testing.T) {
	o := NewObserver(nil)
	var out bytes.Buffer
	if err := o.Feed(&out, []byte(`{"usage":{"prompt_tokens":2,"completion_tokens":0}}`)); err != nil {
		t.Fatal(err)
	}
	_ = o.Close(&out)
	want := Result{Usage: Usage{InputTokens: 2}, HasUsage: true, Outcome: OutcomeCompleted}
	if got := o.Result(); !sameResult(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestNoRetainFeed(t *testing.T) {
	// Feed must copy what it keeps: scribbling over p afterwards changes nothing.
	in := readTestdata(t, "chat_stream_openai.sse")
	req := &Request{Format: FormatChat, Stream: true, InjectedUsage: true}
	o := NewObserver(req)
	o.Start(200, sseType)
	var out bytes.Buffer
	buf := make([]byte, 17)
	for _, p := range chop(in, 17) {
		n := copy(buf, p)
		if err := o.Feed(&out, buf[:n]); err != nil {
			t.Fatal(err)
		}
		for i := range buf {
			buf[i] = '#'
		}
	}
	_ = o.Close(&out)
	if want := readTestdata(t, "chat_stream_openai.client.sse"); !bytes.Equal(out.Bytes(), want) {
		t.Errorf("client got %q", out.Bytes())
	}
	if r := o.Result(); r.Usage.InputTokens != 1200 || r.OutputChars != 16 {
		t.Errorf("got %+v", r)
	}
}
