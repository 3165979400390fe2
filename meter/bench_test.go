package meter

import (
	"fmt"
	"io"
	"strings"
	"testing"
)

// chatStream builds an OpenAI-style chat stream of n content deltas, with
// the usage-only chunk the gateway asks for, as one []byte per event.
func chatStream(n int) [][]byte {
	const head = `data: {"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf","choices":[`
	events := [][]byte{[]byte(head + `{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n")}
	words := []string{" the", " quick", " brown", " fox", " jumps", " über", " 狐狸", " lazy", "\\n", " dog."}
	for i := range n {
		events = append(events, []byte(head+`{"index":0,"delta":{"content":"`+words[i%len(words)]+`"},"logprobs":null,"finish_reason":null}],"usage":null}`+"\n\n"))
	}
	events = append(events,
		[]byte(head+`{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}`+"\n\n"),
		[]byte(head+`],"usage":{"prompt_tokens":1200,"completion_tokens":400,"total_tokens":1600,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}`+"\n\n"),
		[]byte("data: [DONE]\n\n"))
	return events
}

func BenchmarkObserveStream(b *testing.B) {
	events := chatStream(400)
	size := 0
	for _, e := range events {
		size += len(e)
	}
	for _, bc := range []struct {
		name string
		req  Request
	}{
		{"hiding", Request{Format: FormatChat, Stream: true, InjectedUsage: true}},
		{"passthrough", Request{Format: FormatChat, Stream: true, InjectedUsage: true, ClientWantsUsage: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				o := NewObserver(&bc.req)
				o.Start(200, "text/event-stream")
				for _, e := range events {
					if err := o.Feed(io.Discard, e); err != nil {
						b.Fatal(err)
					}
				}
				_ = o.Close(io.Discard)
				if r := o.Result(); r.Usage.OutputTokens != 400 || r.Outcome != OutcomeCompleted {
					b.Fatalf("%+v", r)
				}
			}
		})
	}
}

func BenchmarkObserveJSON(b *testing.B) {
	content := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 100)
	benchObserveJSON(b, []byte(fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":%q,"refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":1200,"completion_tokens":310,"total_tokens":1510,"prompt_tokens_details":{"cached_tokens":1024}}}`, content)))
}

// benchObserveJSON meters body, a chat answer with usage, as one Feed.
func benchObserveJSON(b *testing.B, body []byte) {
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		o := NewObserver(&Request{Format: FormatChat})
		o.Start(200, "application/json")
		_ = o.Feed(io.Discard, body)
		_ = o.Close(io.Discard)
		if !o.Result().HasUsage {
			b.Fatal("no usage")
		}
		o.Free()
	}
}

func BenchmarkParseRequest(b *testing.B) {
	msg := strings.Repeat("Tell me about foxes. ", 200)
	body := []byte(fmt.Sprintf(`{"model":"deepseek-v4-flash","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":%q}],"stream":true,"max_tokens":1024}`, msg))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRequest(FormatChat, body, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkObserveJSONShort meters a short chat answer, the shape most
// non-streamed requests get: the per-response cost matters more than the
// per-byte one.
func BenchmarkObserveJSONShort(b *testing.B) {
	benchObserveJSON(b, []byte(`{"id":"chatcmpl-mock-1","object":"chat.completion","created":1767225600,"model":"deepseek-chat","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the mock upstream"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`))
}

// BenchmarkObserveEscapes meters hostile 1 MiB bodies whose strings are
// mostly escapes (in a key, in a text field, in the usage value), fed in
// 32 KiB pieces: the scanner finds each string's end once, so the cost
// stays linear in the body.
func BenchmarkObserveEscapes(b *testing.B) {
	esc := strings.Repeat(`\na`, (1<<20)/3)
	for name, body := range map[string]string{
		"key":   `{"` + esc + `":1}`,
		"text":  `{"choices":[{"message":{"content":"` + esc + `"}}]}`,
		"usage": `{"usage":{"k":"` + esc + `"}}`,
	} {
		in := []byte(body)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				o := NewObserver(&Request{Format: FormatChat})
				o.Start(200, "application/json")
				for p := in; len(p) > 0; {
					n := min(len(p), 32<<10)
					_ = o.Feed(io.Discard, p[:n])
					p = p[n:]
				}
				_ = o.Close(io.Discard)
				o.Free()
			}
		})
	}
}
