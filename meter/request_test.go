package meter

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestFormatForPath(t *testing.T) {
	for path, want := range map[string]Format{
		"/v1/chat/completions":        FormatChat,
		"/openai/v1/chat/completions": FormatChat,
		"/v1/chat/completions/":       FormatChat,
		"/v1/completions":             FormatCompletions,
		"/v1/embeddings":              FormatEmbeddings,
		"/v1/responses":               FormatResponses,
		"/anthropic/v1/messages":      FormatMessages,
		"/v1/models":                  FormatUnknown,
		"/v1/responses/resp_1":        FormatUnknown,
		"/v1/chat/completionsx":       FormatUnknown,
		"":                            FormatUnknown,
	} {
		if got := FormatForPath(path); got != want {
			t.Errorf("FormatForPath(%q) = %v, want %v", path, got, want)
		}
	}
	names := map[Format]string{FormatUnknown: "", FormatChat: "chat.completions", FormatCompletions: "completions",
		FormatEmbeddings: "embeddings", FormatResponses: "responses", FormatMessages: "messages", 99: ""}
	for f, want := range names {
		if f.String() != want {
			t.Errorf("Format(%d).String() = %q, want %q", f, f.String(), want)
		}
	}
}

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format Format
		body   string
		inject bool
		want   Request
		out    string // the rewritten body; "" means unchanged
		err    error
	}{
		{name: "inject", format: FormatChat, inject: true,
			body: `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi <&>"}]}`,
			want: Request{Model: "gpt-4o", Stream: true, InjectedUsage: true},
			out:  `{"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi <&>"}]}`},
		{name: "inject after whitespace", format: FormatCompletions, inject: true,
			body: " \n{ \"model\" : \"m\", \"stream\" : true }\n",
			want: Request{Model: "m", Stream: true, InjectedUsage: true},
			out:  " \n{\"stream_options\":{\"include_usage\":true}, \"model\" : \"m\", \"stream\" : true }\n"},
		{name: "keep other stream options", format: FormatChat, inject: true,
			body: `{"model":"m","stream_options": {"include_obfuscation":false, "x":[1,{"y":"}"}]} ,"stream":true}`,
			want: Request{Model: "m", Stream: true, InjectedUsage: true},
			out:  `{"model":"m","stream_options": {"include_usage":true,"include_obfuscation":false,"x":[1,{"y":"}"}]} ,"stream":true}`},
		{name: "include_usage false", format: FormatChat, inject: true,
			body: `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`,
			want: Request{Model: "m", Stream: true, InjectedUsage: true},
			out:  `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`},
		{name: "stream_options null", format: FormatChat, inject: true,
			body: `{"model":"m","stream":true,"stream_options":null}`,
			want: Request{Model: "m", Stream: true, InjectedUsage: true},
			out:  `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`},
		{name: "stream_options empty", format: FormatChat, inject: true,
			body: `{"model":"m","stream":true,"stream_options":{}}`,
			want: Request{Model: "m", Stream: true, InjectedUsage: true},
			out:  `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`},
		{name: "duplicate stream_options: last patched", format: FormatChat, inject: true,
			body: `{"model":"m","stream":true,"stream_options":{"include_usage":true},"stream_options":{"a":1}}`,
			want: Request{Model: "m", Stream: true, InjectedUsage: true},
			out:  `{"model":"m","stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":true,"a":1}}`},
		{name: "client wants usage", format: FormatChat, inject: true,
			body: `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
			want: Request{Model: "m", Stream: true, ClientWantsUsage: true}},
		{name: "injection off", format: FormatChat,
			body: `{"model":"m","stream":true}`, want: Request{Model: "m", Stream: true}},
		{name: "not streaming", format: FormatChat, inject: true,
			body: `{"model":"m","stream":false,"stream_options":{"include_usage":true}}`,
			want: Request{Model: "m", ClientWantsUsage: true}},
		{name: "stream not a bool", format: FormatChat, inject: true,
			body: `{"model":"m","stream":"true"}`, want: Request{Model: "m"}},
		{name: "embeddings never stream", format: FormatEmbeddings, inject: true,
			body: `{"model":"e","stream":true,"input":"x"}`, want: Request{Model: "e"}},
		{name: "messages stream natively", format: FormatMessages, inject: true,
			body: `{"model":"claude","stream":true,"max_tokens":1024}`,
			want: Request{Model: "claude", Stream: true, MaxOutputTokens: 1024}},
		{name: "responses stream natively", format: FormatResponses, inject: true,
			body: `{"model":"gpt-5","stream":true,"max_output_tokens":500}`,
			want: Request{Model: "gpt-5", Stream: true, MaxOutputTokens: 500}},
		{name: "max_completion_tokens", format: FormatChat, body: `{"model":"m","max_completion_tokens":200}`,
			want: Request{Model: "m", MaxOutputTokens: 200}},
		{name: "both max: larger", format: FormatChat, body: `{"model":"m","max_tokens":300,"max_completion_tokens":200}`,
			want: Request{Model: "m", MaxOutputTokens: 300}},
		{name: "max_tokens float", format: FormatChat, body: `{"model":"m","max_tokens":100.0}`,
			want: Request{Model: "m", MaxOutputTokens: 100}},
		{name: "max_tokens bad", format: FormatChat, body: `{"model":"m","max_tokens":"100","max_output_tokens":-5}`,
			want: Request{Model: "m"}},
		{name: "max_tokens null", format: FormatChat, body: `{"model":"m","max_tokens":null}`,
			want: Request{Model: "m"}},
		{name: "last model wins", format: FormatChat, body: `{"model":"cheap","model":"dear"}`,
			want: Request{Model: "dear"}},
		{name: "escaped key", format: FormatChat, body: `{"model":"cheap","mod\u0065l":"de\u0061r"}`,
			want: Request{Model: "dear"}},
		{name: "key case matters", format: FormatChat, body: `{"model":"m","MODEL":"x"}`,
			want: Request{Model: "m"}},
		{name: "nested model ignored", format: FormatChat, body: `{"x":{"model":"x"},"model":"m"}`,
			want: Request{Model: "m"}},
		{name: "unknown format", format: FormatUnknown, inject: true, body: `{"model":"m","stream":true}`,
			want: Request{Model: "m", Stream: true}},
		{name: "bad json", format: FormatChat, body: `{"model":"m"`, err: ErrInvalidJSON},
		{name: "trailing garbage", format: FormatChat, body: `{"model":"m"} x`, err: ErrInvalidJSON},
		{name: "array", format: FormatChat, body: `[{"model":"m"}]`, err: ErrInvalidJSON},
		{name: "string", format: FormatChat, body: `"model"`, err: ErrInvalidJSON},
		{name: "empty", format: FormatChat, body: ``, err: ErrInvalidJSON},
		{name: "no model", format: FormatChat, body: `{"stream":true}`, err: ErrMissingModel},
		{name: "empty model", format: FormatChat, body: `{"model":""}`, err: ErrMissingModel},
		{name: "number model", format: FormatChat, body: `{"model":4}`, err: ErrMissingModel},
		{name: "null model", format: FormatChat, body: `{"model":null}`, err: ErrMissingModel},
		{name: "model overridden by null", format: FormatChat, body: `{"model":"m","model":null}`, err: ErrMissingModel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			got, err := ParseRequest(tc.format, body, tc.inject)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			wantBody := tc.out
			if wantBody == "" {
				if &got.Body[0] != &body[0] || len(got.Body) != len(body) {
					t.Errorf("body copied or changed: %q", got.Body)
				}
			} else {
				if string(got.Body) != wantBody {
					t.Errorf("body\n got %s\nwant %s", got.Body, wantBody)
				}
				if !json.Valid(got.Body) {
					t.Errorf("rewritten body is not JSON")
				}
			}
			want := tc.want
			want.Format, want.Body, want.InputEstimate = tc.format, got.Body, int64(len(body)+1)/2
			if got.Model != want.Model || got.Stream != want.Stream || got.MaxOutputTokens != want.MaxOutputTokens ||
				got.ClientWantsUsage != want.ClientWantsUsage || got.InjectedUsage != want.InjectedUsage ||
				got.InputEstimate != want.InputEstimate || got.Format != want.Format {
				t.Errorf("got %+v\nwant %+v", *got, want)
			}
		})
	}
}
