package meter

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

var update = flag.Bool("update", false, "rewrite the extracted-text goldens of testdata/meter/requests")

// sameResult compares two Results; want.OutputSample nil means any sample.
func sameResult(got, want Result) bool {
	if want.OutputSample != nil && !bytes.Equal(got.OutputSample, want.OutputSample) {
		return false
	}
	got.OutputSample, want.OutputSample = nil, nil
	return reflect.DeepEqual(got, want)
}

func TestTokenizerFor(t *testing.T) {
	for model, want := range map[string]string{
		"gpt-4o": "o200k_base", "gpt-4o-mini-2024-07-18": "o200k_base", "GPT-4O": "o200k_base",
		"gpt-4.1-nano": "o200k_base", "gpt-4.5-preview": "o200k_base", "gpt-5": "o200k_base",
		"gpt-5-mini": "o200k_base", "o1": "o200k_base", "o1-mini": "o200k_base", "o3-pro": "o200k_base",
		"o4-mini": "o200k_base", "chatgpt-4o-latest": "o200k_base", "openai/gpt-4o": "o200k_base",
		"ft:gpt-4o-mini-2024-07-18:acme::abc123": "o200k_base",
		"gpt-4":                                  "cl100k_base", "gpt-4-turbo": "cl100k_base", "gpt-4-0613": "cl100k_base",
		"gpt-3.5-turbo": "cl100k_base", "gpt-3.5-turbo-instruct": "cl100k_base",
		"text-embedding-3-small": "cl100k_base", "text-embedding-ada-002": "cl100k_base",
		"deepseek-chat": "chars", "deepseek-v4-flash": "chars", "claude-sonnet-4-5": "chars",
		"claude-3-5-haiku-latest": "chars", "davinci-002": "chars", "": "chars", "llama-3": "chars",
	} {
		if got := TokenizerFor(model); got != want {
			t.Errorf("TokenizerFor(%q) = %q, want %q", model, got, want)
		}
	}
}

func TestCountTokens(t *testing.T) {
	for _, tc := range []struct {
		model, text string
		want        int64
	}{
		{"gpt-4o", "你好，世界", 3},
		{"gpt-4", "你好，世界", 6},
		{"gpt-4o", "hello world", 2},
		{"gpt-4", "hello world", 2},
		{"gpt-5", "The quick brown fox jumps over the lazy dog.", 10},
		{"gpt-3.5-turbo", "The quick brown fox jumps over the lazy dog.", 10},
		{"gpt-4o", "Hello, 世界! 😀", 5},
		{"gpt-4", "Hello, 世界! 😀", 8},
		{"gpt-4o", "", 0},
		{"gpt-4o", "\xff\xfe", 1},                      // invalid UTF-8: one U+FFFD per byte, then merged
		{"text-embedding-3-small", "<|endoftext|>", 7}, // special tokens are plain text
		// The characters rule: ceil(0.3 × other + 0.6 × CJK).
		{"deepseek-chat", "", 0},
		{"deepseek-chat", "a", 1},
		{"deepseek-chat", "hello world", 4},               // 11 × 0.3 = 3.3
		{"deepseek-chat", "0123456789", 3},                // 10 × 0.3 = 3.0 exactly
		{"claude-sonnet-4-5", "你好，世界", 3},                 // 5 × 0.6 = 3.0 (the comma is full-width)
		{"claude-sonnet-4-5", "你好, world", 4},             // 2 × 0.6 + 7 × 0.3 = 3.3
		{"deepseek-chat", "こんにちは、カタカナ", 6},                // Hiragana, 、(U+3001), Katakana: 10 × 0.6
		{"deepseek-chat", "안녕하세요", 3},                     // Hangul: 5 × 0.6
		{"deepseek-chat", "é😀\xff", 1},                    // 3 × 0.3 = 0.9
		{"unknown-model", strings.Repeat("字", 1000), 600}, // no float drift
		{"unknown-model", strings.Repeat("x", 1001), 301}, // 300.3
	} {
		if got := CountTokens(tc.model, []byte(tc.text)); got != tc.want {
			t.Errorf("CountTokens(%q, %q) = %d, want %d", tc.model, tc.text, got, tc.want)
		}
	}
}

func TestCountTokensConcurrent(t *testing.T) {
	texts := []string{"hello world", "你好，世界", "The quick brown fox jumps over the lazy dog."}
	models := []string{"gpt-4o", "gpt-4", "deepseek-chat"}
	want := make(map[string]int64)
	for _, m := range models {
		for _, s := range texts {
			want[m+s] = CountTokens(m, []byte(s))
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				m, s := models[(g+i)%3], texts[i%3]
				if got := CountTokens(m, []byte(s)); got != want[m+s] {
					t.Errorf("%s %q: %d, want %d", m, s, got, want[m+s])
				}
			}
		})
	}
	wg.Wait()
}

// requestGoldens are the bodies of testdata/meter/requests with their
// estimates. The text each yields is in the .txt file of the same name.
var requestGoldens = []struct {
	file   string
	format Format
	want   int64
}{
	{"chat_openai.json", FormatChat, 116 + MediaPartTokens}, // one image_url part
	{"chat_deepseek.json", FormatChat, 57},
	{"chat_legacy_functions.json", FormatChat, 76},
	{"completions_prompt.json", FormatCompletions, 18},
	{"completions_token_ids.json", FormatCompletions, 6}, // token ids, one each
	{"embeddings_strings.json", FormatEmbeddings, 26},
	{"embeddings_ids.json", FormatEmbeddings, 4},
	{"responses_string.json", FormatResponses, 14},
	{"responses_items.json", FormatResponses, 84 + MediaPartTokens}, // one input_image part
	{"messages_claude.json", FormatMessages, 102 + MediaPartTokens}, // one image block
	{"messages_string.json", FormatMessages, 37},
}

func TestEstimateInput(t *testing.T) {
	dir := filepath.Join("..", "testdata", "meter", "requests")
	for _, tc := range requestGoldens {
		t.Run(tc.file, func(t *testing.T) {
			body := readTestdata(t, filepath.Join("requests", tc.file))
			var m struct{ Model string }
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			req, err := ParseRequest(tc.format, body, true)
			if err != nil {
				t.Fatal(err)
			}
			p, ok := gatherPrompt(tc.format, body)
			if ref, _ := refGatherPrompt(tc.format, body); !ok || !bytes.Equal(p.text, ref.text) || p.extra != ref.extra {
				t.Fatalf("gathered %v %q %d, encoding/json %q %d", ok, p.text, p.extra, ref.text, ref.extra)
			}
			golden := filepath.Join(dir, strings.TrimSuffix(tc.file, ".json")+".txt")
			text := fmt.Sprintf("%s\n-- %s, %d tokens counted directly\n", p.text, TokenizerFor(m.Model), p.extra)
			if *update {
				if err := os.WriteFile(golden, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if want, err := os.ReadFile(golden); err != nil || string(want) != text {
				t.Errorf("extracted text (run with -update to accept)\n got %q\nwant %q (%v)", text, want, err)
			}
			got := EstimateInput(tc.format, m.Model, body)
			if got != tc.want {
				t.Errorf("EstimateInput = %d, want %d", got, tc.want)
			}
			// The injected body (stream_options) estimates the same.
			if again := EstimateInput(tc.format, m.Model, req.Body); again != got {
				t.Errorf("rewritten body: %d, want %d", again, got)
			}
			if u := Estimate(req, Result{}); u != (Usage{InputTokens: got}) {
				t.Errorf("Estimate = %+v", u)
			}
		})
	}
}

func TestEstimateInputEdges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format Format
		model  string
		body   string
		want   int64
	}{
		{"not json: counted whole", FormatChat, "deepseek-chat", `{"model":`, 3},
		{"null", FormatChat, "gpt-4o", `null`, 1},
		{"unknown format", FormatUnknown, "gpt-4o", `{"messages":[{"role":"user","content":"hi"}]}`, 0},
		{"no messages", FormatChat, "gpt-4o", `{"model":"gpt-4o"}`, 0},
		{"empty messages", FormatChat, "gpt-4o", `{"messages":[]}`, 3},
		{"messages not an array", FormatChat, "gpt-4o", `{"messages":"hello"}`, 0},
		{"odd members", FormatChat, "gpt-4o", `{"messages":[1,null,"x",{"role":7,"content":{"text":"hi"}},{"content":[[["deep"]]]}]}`, 2*3 + 3 + 3}, // "hi\ndeep": 3 tokens,
		{"one message", FormatChat, "gpt-4o", `{"messages":[{"role":"user","content":"hello world"}]}`, 3 + 3 + 4},                                  // "user\nhello world": 4 tokens
		{"prompt string", FormatCompletions, "gpt-3.5-turbo-instruct", `{"prompt":"hello world"}`, 2},
		{"prompt ids", FormatCompletions, "davinci-002", `{"prompt":[1,2,3]}`, 3},
		{"prompt id arrays", FormatCompletions, "davinci-002", `{"prompt":[[1,2],[3],[]]}`, 3},
		{"input string", FormatEmbeddings, "text-embedding-3-small", `{"input":"hello world"}`, 2},
		{"escapes decoded", FormatEmbeddings, "text-embedding-3-small", `{"input":"hello\u0020world"}`, 2},
		{"deep nesting not counted", FormatEmbeddings, "x", `{"input":` + strings.Repeat("[", 20) + `1` + strings.Repeat("]", 20) + `}`, 0},
		{"responses input string", FormatResponses, "gpt-4o", `{"input":"hello world"}`, 2},
		{"messages system string", FormatMessages, "claude-x", `{"system":"aaaaaaaaaa","messages":[]}`, 3 + 3},
		{"tool_use input", FormatMessages, "claude-x", `{"messages":[{"role":"assistant","content":[{"type":"tool_use","name":"f","input":{ "a" : 1 }}]}]}`,
			3 + 3 + 6}, // "assistant\nf\n{\"a\":1}": 19 runes
		{"tools without function", FormatChat, "gpt-4o", `{"tools":[{"type":"function","function":"x"},{"function":null,"name":"n"}]}`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := EstimateInput(tc.format, tc.model, []byte(tc.body)); got != tc.want {
				p, _ := gatherPrompt(tc.format, []byte(tc.body))
				t.Errorf("got %d, want %d (text %q, extra %d)", got, tc.want, p.text, p.extra)
			}
		})
	}
}

func TestEstimateInputLong(t *testing.T) {
	// Past 256 KiB the prompt is scaled from its start: within 0.5 % of the
	// exact count for uniform text. The characters rule counts it all.
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. 狐狸跳过了狗。\n", 9000) // ≈ 500 KB
	body, _ := json.Marshal(map[string]any{"input": text})
	for _, model := range []string{"gpt-4o", "text-embedding-3-small", "deepseek-chat"} {
		exact := CountTokens(model, []byte(text))
		got := EstimateInput(FormatEmbeddings, model, body)
		if d := got - exact; d < -exact/200 || d > exact/200 || model == "deepseek-chat" && d != 0 {
			t.Errorf("%s: %d, exact %d", model, got, exact)
		}
	}
}

func TestEstimateOutput(t *testing.T) {
	sample := []byte("hello world") // 2 tokens in o200k, 11 runes
	for _, tc := range []struct {
		name  string
		model string
		r     Result
		want  int64
	}{
		{"nothing", "gpt-4o", Result{}, 0},
		{"sample only", "gpt-4o", Result{OutputChars: 11, OutputSample: sample}, 2},
		{"scaled", "gpt-4o", Result{OutputChars: 110, OutputSample: sample}, 20},
		{"scaled, rounded up", "gpt-4o", Result{OutputChars: 12, OutputSample: sample}, 3}, // 2 × 12/11
		{"fewer chars than sample", "gpt-4o", Result{OutputChars: 3, OutputSample: sample}, 2},
		{"chars rule", "deepseek-chat", Result{OutputChars: 22, OutputSample: sample}, 8}, // 4 × 2
		{"no sample", "gpt-4o", Result{OutputChars: 10}, 3},
		{"huge", "gpt-4o", Result{OutputChars: 1 << 62, OutputSample: sample}, (2*maxCount + 10) / 11},
		{"negative", "gpt-4o", Result{OutputChars: -5}, 0},
	} {
		if got := EstimateOutput(tc.model, tc.r); got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestEstimateEndToEnd estimates requests whose response ended without a
// usage report, from the golden transcripts.
func TestEstimateEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		request, response string
		format            Format
		outcome           Outcome
		sample            string
		want              Usage
	}{
		// The cut stream's last event has no end, so "lost" never counts.
		{"chat_openai.json", "chat_stream_cut.sse", FormatChat, OutcomeCutOff, "Hello wor", Usage{InputTokens: 116 + MediaPartTokens, OutputTokens: 2}},
		{"chat_deepseek.json", "chat_stream_error.sse", FormatChat, OutcomeStreamError, "Par", Usage{InputTokens: 57, OutputTokens: 1}},
		{"responses_string.json", "responses_failed.sse", FormatResponses, OutcomeStreamError, "x", Usage{InputTokens: 14, OutputTokens: 1}},
	} {
		t.Run(tc.response, func(t *testing.T) {
			req, err := ParseRequest(tc.format, readTestdata(t, filepath.Join("requests", tc.request)), true)
			if err != nil {
				t.Fatal(err)
			}
			r, _ := observe(t, req, 200, sseType, [][]byte{readTestdata(t, tc.response)})
			if r.HasUsage || r.Outcome != tc.outcome || string(r.OutputSample) != tc.sample {
				t.Fatalf("result %+v", r)
			}
			if got := Estimate(req, r); got != tc.want {
				t.Errorf("Estimate = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestOutputSampleTranscripts(t *testing.T) {
	samples := map[string]string{
		"chat_stream_openai.sse":   "Héllo, 世界!\né\"ok\"",
		"chat_stream_deepseek.sse": "Let me think.Answer.{\"q\":1}",
		"completions_stream.sse":   "Once upon",
		"messages_stream.sse":      "Hmm…Hi{\"a\": 1}",
		"responses_stream.sse":     "Hi there ✓",
		"chat_json_openai.json":    "Hi!",
		"messages_json.json":       "HmmHello!",
		"responses_json.json":      "ThoughtHi there",
		"completions_json.json":    "\n\nThis is a test.",
		"embeddings.json":          "",
	}
	for _, tc := range transcripts {
		for how, pieces := range splits(readTestdata(t, tc.file), 11) {
			req := &Request{Format: tc.format, Stream: tc.want.Stream, InjectedUsage: tc.inject, ClientWantsUsage: tc.wants}
			r, _ := observe(t, req, tc.status, tc.ct, pieces)
			if n := utf8.RuneCount(r.OutputSample); int64(n) != r.OutputChars {
				t.Errorf("%s %s: sample %q has %d runes, OutputChars %d", tc.file, how, r.OutputSample, n, r.OutputChars)
			}
			if want, ok := samples[tc.file]; ok && string(r.OutputSample) != want {
				t.Errorf("%s %s: sample %q, want %q", tc.file, how, r.OutputSample, want)
			}
			if (r.OutputSample == nil) != (r.OutputChars == 0) {
				t.Errorf("%s %s: sample %v for %d chars", tc.file, how, r.OutputSample, r.OutputChars)
			}
		}
	}
}

// deltaEvent is one chat chunk carrying the JSON string s as content.
func deltaEvent(s string) []byte {
	return []byte(`data: {"choices":[{"index":0,"delta":{"content":"` + s + `"}}]}` + "\n\n")
}

func TestObserverSampleCap(t *testing.T) {
	// 3-byte runes in pieces of 7 bytes never line up with the cap, so the
	// cut must fall back to a rune boundary.
	const piece = `ab世界c` // 9 bytes, 5 runes
	n := sampleCap/len(piece) + 100
	var stream [][]byte
	for range n {
		stream = append(stream, deltaEvent(piece))
	}
	stream = append(stream, deltaEvent(`\ud83d\ude00`), []byte("data: [DONE]\n\n"))
	req := &Request{Format: FormatChat, Stream: true}
	r, _ := observe(t, req, 200, sseType, stream)
	if want := int64(5*n + 1); r.OutputChars != want {
		t.Errorf("OutputChars %d, want %d", r.OutputChars, want)
	}
	if len(r.OutputSample) > sampleCap || len(r.OutputSample) < sampleCap-utf8.UTFMax || !utf8.Valid(r.OutputSample) {
		t.Fatalf("sample of %d bytes, valid %v", len(r.OutputSample), utf8.Valid(r.OutputSample))
	}
	if want := strings.Repeat(piece, n); !strings.HasPrefix(want, string(r.OutputSample)) {
		t.Error("sample is not the start of the text")
	}
	// Tokens scale with the characters that passed beyond the sample.
	full := CountTokens("gpt-4o", []byte(strings.Repeat(piece, n)+"😀"))
	est := EstimateOutput("gpt-4o", r)
	if est < full*95/100 || est > full*105/100 {
		t.Errorf("estimate %d, exact count %d", est, full)
	}

	// A JSON body: the same cap, the text decoded byte by byte.
	body := []byte(`{"choices":[{"message":{"content":"` + strings.Repeat(piece, n) + `"}}]}`)
	for _, pieces := range [][][]byte{{body}, chop(body, 7)} {
		r, _ := observe(t, &Request{Format: FormatChat}, 200, "application/json", pieces)
		if r.OutputChars != int64(5*n) || len(r.OutputSample) > sampleCap || len(r.OutputSample) < sampleCap-utf8.UTFMax ||
			!strings.HasPrefix(string(body[len(`{"choices":[{"message":{"content":"`):]), string(r.OutputSample)) {
			t.Errorf("JSON: chars %d, sample of %d bytes", r.OutputChars, len(r.OutputSample))
		}
	}
}

func TestObserverSampleAllocs(t *testing.T) {
	// The sample buffer is allocated at the first text and grows a few
	// times: a stream costs the same allocations whatever its length, none
	// once the sample is full, and none without text.
	content := deltaEvent(`Hello, \"world\" \u00e9 0123456789`)
	empty := []byte(`data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}` + "\n\n")
	stream := func(chunk []byte, n int) func() {
		return func() {
			o := NewObserver(&Request{Format: FormatChat, Stream: true})
			o.Start(200, sseType)
			for range n {
				_ = o.Feed(io.Discard, chunk)
			}
			if r := o.Result(); len(r.OutputSample) > sampleCap || cap(o.sample.buf) > sampleCap {
				t.Fatalf("sample of %d bytes, cap %d", len(r.OutputSample), cap(o.sample.buf))
			}
		}
	}
	base := testing.AllocsPerRun(20, stream(empty, 1000))
	if short := testing.AllocsPerRun(20, stream(content, 1)); short != base+1 {
		t.Errorf("one chunk: %v allocs, want %v", short, base+1)
	}
	if long := testing.AllocsPerRun(20, stream(content, 2000)); long != base+6 { // 512 B … 16 KiB
		t.Errorf("2000 chunks: %v allocs, want %v", long, base+6)
	}
	o := NewObserver(&Request{Format: FormatChat, Stream: true})
	o.Start(200, sseType)
	for range 1000 {
		_ = o.Feed(io.Discard, content)
	}
	if got := testing.AllocsPerRun(100, func() { _ = o.Feed(io.Discard, content) }); got != 0 {
		t.Errorf("%v allocs per chunk", got)
	}
	o = NewObserver(&Request{Format: FormatChat, Stream: true})
	o.Start(200, sseType)
	_ = o.Feed(io.Discard, empty)
	if o.sample.buf != nil {
		t.Error("sample allocated without text")
	}
}

func TestSamplerDecode(t *testing.T) {
	// The sampler decodes JSON string content as encoding/json does, however
	// it is split.
	for _, raw := range []string{
		`plain`, `a\"b\\c\/d\b\f\n\r\t`, `\u00e9\u4e16`, `\ud83d\ude00`, `\uD83D\uDE00`,
		`\ud83d`, `\ud83dx`, `\ud83d\n`, `\ude00`, `\ud83d\ud83d\ude00`, `\ud83d\u0041`,
		`é世😀`, `\u0000`,
	} {
		var want string
		if err := json.Unmarshal([]byte(`"`+raw+`"`), &want); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		var whole sampler
		whole.addString([]byte(raw))
		var bytewise sampler
		for i := range len(raw) {
			bytewise.addByte(raw[i])
		}
		bytewise.endString()
		if string(whole.buf) != want || string(bytewise.buf) != want {
			t.Errorf("%s: got %q and %q, want %q", raw, whole.buf, bytewise.buf, want)
		}
	}
}

func BenchmarkEstimate(b *testing.B) {
	body := readTestdata(b, filepath.Join("requests", "chat_openai.json"))
	long := []byte(fmt.Sprintf(`{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":%q}]}`,
		strings.Repeat("Tell me about foxes. 狐狸是什么？ ", 200)))
	var text []byte
	for len(text) < 64<<10 {
		text = append(text, "The quick brown fox jumps over the lazy dog; 敏捷的棕色狐狸跳过了懒狗。\n"...)
	}
	// A response cut after 64 KiB of text: a 16 KiB sample, scaled.
	var stream [][]byte
	for i := 0; i < len(text); i += 64 {
		stream = append(stream, deltaEvent(strings.ReplaceAll(string(text[i:min(i+64, len(text))]), "\n", `\n`)))
	}
	for _, bc := range []struct {
		name, model string
		body        []byte
	}{
		{"o200k/tools", "gpt-4o", body},
		{"o200k/6KB", "gpt-4o", long},
		{"cl100k/6KB", "gpt-4", long},
		{"chars/6KB", "deepseek-chat", long},
	} {
		req, err := ParseRequest(FormatChat, bc.body, true)
		if err != nil {
			b.Fatal(err)
		}
		req.Model = bc.model
		r, _ := observe(b, req, 200, sseType, stream)
		if len(r.OutputSample) < sampleCap-utf8.UTFMax {
			b.Fatalf("sample %d", len(r.OutputSample))
		}
		CountTokens(bc.model, []byte("warm up"))
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if u := Estimate(req, r); u.InputTokens == 0 || u.OutputTokens == 0 {
					b.Fatal(u)
				}
			}
		})
	}
}

func BenchmarkCountTokens(b *testing.B) {
	text := []byte(strings.Repeat("The quick brown fox jumps over the lazy dog; 敏捷的棕色狐狸跳过了懒狗。\n", 200)) // ≈ 17 KB
	for _, model := range []string{"gpt-4o", "gpt-4", "deepseek-chat"} {
		CountTokens(model, []byte("warm up"))
		b.Run(TokenizerFor(model), func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for b.Loop() {
				CountTokens(model, text)
			}
		})
	}
}

// TestEstimateInputMedia: each media part counts MediaPartTokens, so a
// request with images that ends without a usage report is not billed as if
// it had none.
func TestEstimateInputMedia(t *testing.T) {
	img := `{"type":"image_url","image_url":{"url":"https://x/y.png"}}`
	twenty := strings.TrimSuffix(strings.Repeat(img+",", 20), ",")
	for _, tc := range []struct {
		name   string
		format Format
		body   string
		media  int64
	}{
		{"chat: 20 images", FormatChat, `{"messages":[{"role":"user","content":[` + twenty + `]}]}`, 20},
		{"chat: audio, file, audio reference", FormatChat, `{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AA==","format":"wav"}},{"type":"file","file":{"file_id":"f"}}]},{"role":"assistant","audio":{"id":"audio_1"}}]}`, 3},
		{"chat: type in another case", FormatChat, `{"messages":[{"role":"user","content":[{"TYPE":"image_url"},{"type":"IMAGE_URL"},{"ty\u0070e":"image\u005furl"}]}]}`, 3},
		{"chat: text only", FormatChat, `{"messages":[{"role":"user","content":[{"type":"text","text":"image_url"}]},{"role":"user","content":"image"}]}`, 0},
		{"messages: image, document, image in a tool result", FormatMessages, `{"messages":[{"role":"user","content":[{"type":"image","source":{}},{"type":"document","source":{}},{"type":"tool_result","content":[{"type":"image","source":{}},{"type":"text","text":"x"}]}]}]}`, 3},
		{"responses: input_image, input_file, call output", FormatResponses, `{"input":[{"role":"user","content":[{"type":"input_image","image_url":"u"},{"type":"input_file","file_id":"f"}]},{"type":"function_call_output","output":[{"type":"input_image","image_url":"u"}]}]}`, 3},
		{"responses: string input", FormatResponses, `{"input":"image_url"}`, 0},
		{"bounded depth", FormatChat, `{"messages":[{"content":` + strings.Repeat(`[`, 30) + img + strings.Repeat(`]`, 30) + `}]}`, 0},
		{"embeddings: never", FormatEmbeddings, `{"input":[` + img + `]}`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			p, ok := gatherPrompt(tc.format, body)
			if !ok || p.media != tc.media {
				t.Fatalf("media %d (ok %v), want %d", p.media, ok, tc.media)
			}
			got := EstimateInput(tc.format, "gpt-4o", body)
			if want := CountTokens("gpt-4o", p.text) + p.extra + tc.media*MediaPartTokens; got != want {
				t.Errorf("EstimateInput = %d, want %d", got, want)
			}
			if tc.format == FormatEmbeddings {
				return
			}
			req, err := ParseRequest(tc.format, []byte(`{"model":"m",`+tc.body[1:]), false)
			if strings.Contains(tc.name, "audio") {
				// Audio input is priced per audio token: refused.
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != "messages" {
					t.Fatalf("audio input: %v, want a FieldError on messages", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.MediaParts != tc.media {
				t.Errorf("Request.MediaParts = %d, want %d", req.MediaParts, tc.media)
			}
		})
	}
}
