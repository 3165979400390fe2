package meter

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
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
		{name: "client wants usage", format: FormatChat, inject: true,
			body: `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
			want: Request{Model: "m", Stream: true, ClientWantsUsage: true}},
		{name: "injection off", format: FormatChat,
			body: `{"model":"m","stream":true}`, want: Request{Model: "m", Stream: true}},
		{name: "not streaming", format: FormatChat, inject: true,
			body: `{"model":"m","stream":false,"stream_options":{"include_usage":true}}`,
			want: Request{Model: "m", ClientWantsUsage: true}},
		{name: "stream null", format: FormatChat, inject: true,
			body: `{"model":"m","stream":null,"stream_options":null}`, want: Request{Model: "m"}},
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
		{name: "max_tokens null", format: FormatChat, body: `{"model":"m","max_tokens":null}`,
			want: Request{Model: "m"}},
		{name: "escaped key", format: FormatChat, body: `{"mod\u0065l":"de\u0061r"}`,
			want: Request{Model: "dear"}},
		{name: "unknown keys in any case", format: FormatChat, body: `{"model":"m","Temperature":1,"ſeed":2,"user":"U"}`,
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
			want.Format, want.Body, want.InputEstimate, want.Choices = tc.format, got.Body, int64(len(body)+1)/2, 1
			if got.Model != want.Model || got.Stream != want.Stream || got.MaxOutputTokens != want.MaxOutputTokens ||
				got.ClientWantsUsage != want.ClientWantsUsage || got.InjectedUsage != want.InjectedUsage ||
				got.InputEstimate != want.InputEstimate || got.Format != want.Format || got.Choices != 1 || got.MediaParts != 0 {
				t.Errorf("got %+v\nwant %+v", *got, want)
			}
		})
	}
}

// TestParseRequestAttacks: the bodies a gateway and an upstream could read
// two ways (billed as one model, served as another; usage hidden; limits
// ignored) are refused, naming the field.
func TestParseRequestAttacks(t *testing.T) {
	for _, tc := range []struct {
		body  string
		field string
	}{
		{`{"model":"cheap","MODEL":"dear"}`, "model"},
		{`{"model":"cheap","model":"dear"}`, "model"},
		{`{"model":"cheap","mod\u0065l":"dear"}`, "model"},
		{`{"model":"cheap","Model":"dear","messages":[]}`, "model"},
		{`{"model":"cheap","\u004dODEL":"dear"}`, "model"},
		{`{"model":"m","stream":false,"STREAM":true}`, "stream"},
		{`{"model":"m","ſtream":true}`, "stream"},      // U+017F folds to s
		{`{"model":"m","\u017ftream":true}`, "stream"}, // the same, escaped
		{`{"model":"m","stream":true,"STREAM_OPTIONS":{"include_usage":false}}`, "stream_options"},
		{`{"model":"m","stream":true,"stream_options":{"include_usage":true,"INCLUDE_USAGE":false}}`, "stream_options.include_usage"},
		{`{"model":"m","stream":true,"stream_options":{"include_usage":false,"include_usage":true}}`, "stream_options.include_usage"},
		{`{"model":"m","stream":"true"}`, "stream"},
		{`{"model":"m","stream":1}`, "stream"},
		{`{"model":"m","max_tokens":"100000"}`, "max_tokens"},
		{`{"model":"m","max_tokens":10,"max_toKens":100000}`, "max_tokens"}, // the Kelvin sign U+212A
		{`{"model":"m","max_tokens":10,"MAX_TOKENS":100000}`, "max_tokens"},
		{`{"model":"m","max_tokens":10,"max_tokens":100000}`, "max_tokens"},
		{`{"model":"m","max_completion_tokens":1e5}`, "max_completion_tokens"},
		{`{"model":"m","max_output_tokens":100.0}`, "max_output_tokens"},
		{`{"model":"m","max_tokens":-1}`, "max_tokens"},
		{`{"model":"m","n":"4"}`, "n"},
		{`{"model":"m","n":1,"N":128}`, "n"},
		{`{"model":"m","best_of":"20"}`, "best_of"},
		{`{"model":"m","İnput":"x","input":"y"}`, "input"}, // U+0130 upper-cases some decoders' way to I
		{`{"model":"m","messages":[],"MESSAGES":[{"role":"user","content":"long"}]}`, "messages"},
	} {
		t.Run(tc.body, func(t *testing.T) {
			for _, f := range []Format{FormatChat, FormatCompletions, FormatResponses, FormatMessages, FormatEmbeddings} {
				_, err := ParseRequest(f, []byte(tc.body), true)
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tc.field {
					t.Fatalf("%v: error %v, want a FieldError for %q", f, err, tc.field)
				}
			}
		})
	}
}

// TestParseRequestRefused: each refusal, with its message.
func TestParseRequestRefused(t *testing.T) {
	for _, tc := range []struct {
		format Format
		body   string
		msg    string // the whole error message
	}{
		{FormatChat, `{"model":"a","model":"b"}`, `invalid "model": given twice`},
		{FormatChat, `{"model":"a","MODEL":"b"}`, `invalid "model": also given as "MODEL", which differs only in letter case`},
		{FormatChat, `{"model":"a\ud800"}`, `invalid "model": must be valid UTF-8 text`},
		{FormatChat, "{\"model\":\"a\xff\"}", `invalid "model": must be valid UTF-8 text`},
		{FormatChat, `{"model":"m","stream":0}`, `invalid "stream": must be true, false or null`},
		{FormatChat, `{"model":"m","stream_options":true}`, `invalid "stream_options": must be an object or null`},
		{FormatChat, `{"model":"m","stream_options":[]}`, `invalid "stream_options": must be an object or null`},
		{FormatChat, `{"model":"m","stream_options":{"include_usage":"yes"}}`, `invalid "stream_options.include_usage": must be true, false or null`},
		{FormatChat, `{"model":"m","stream_options":{"Include_Usage":true}}`, `invalid "stream_options.include_usage": also given as "Include_Usage", which differs only in letter case`},
		{FormatChat, `{"model":"m","max_tokens":2147483648}`, `invalid "max_tokens": must be an integer from 0 to 2147483647, or null`},
		{FormatChat, `{"model":"m","max_tokens":99999999999999999999}`, `invalid "max_tokens": must be an integer from 0 to 2147483647, or null`},
		{FormatChat, `{"model":"m","max_tokens":true}`, `invalid "max_tokens": must be an integer from 0 to 2147483647, or null`},
		{FormatChat, `{"model":"m","max_tokens":-0}`, `invalid "max_tokens": must be an integer from 0 to 2147483647, or null`},
		{FormatChat, `{"model":"m","n":0}`, `invalid "n": must be an integer from 1 to 128, or null`},
		{FormatChat, `{"model":"m","n":129}`, `invalid "n": must be an integer from 1 to 128, or null`},
		{FormatCompletions, `{"model":"m","best_of":1.5}`, `invalid "best_of": must be an integer from 1 to 128, or null`},
		{FormatChat, `{"model":"m","service_tier":"priority"}`, `invalid "service_tier": tier "priority" is priced differently from plain tokens; only "auto" and "default" are accepted`},
		{FormatResponses, `{"model":"m","service_tier":"flex"}`, `invalid "service_tier": tier "flex" is priced differently from plain tokens; only "auto" and "default" are accepted`},
		{FormatMessages, `{"model":"m","service_tier":"priority"}`, `invalid "service_tier": tier "priority" is priced differently from plain tokens; only "auto" and "default" are accepted`},
		{FormatChat, `{"model":"m","service_tier":"standard_only"}`, `invalid "service_tier": tier "standard_only" is priced differently from plain tokens; only "auto" and "default" are accepted`},
		{FormatChat, `{"model":"m","service_tier":1}`, `invalid "service_tier": must be a string or null`},
		{FormatChat, `{"model":"m","Service_Tier":"default"}`, `invalid "service_tier": also given as "Service_Tier", which differs only in letter case`},
		{FormatChat, `{"model":"m","modalities":["text","audio"]}`, `invalid "modalities": audio output is priced per audio token and is not supported`},
		{FormatChat, `{"model":"m","modalities":"text"}`, `invalid "modalities": must be an array or null`},
		{FormatChat, `{"model":"m","audio":{"voice":"alloy","format":"wav"}}`, `invalid "audio": audio output is priced per audio token and is not supported`},
		{FormatChat, `{"model":"m","web_search_options":{}}`, `invalid "web_search_options": web search is billed per call and is not supported`},
		{FormatResponses, `{"model":"m","background":true}`, `invalid "background": background responses are not supported`},
		{FormatResponses, `{"model":"m","background":"false"}`, `invalid "background": must be true, false or null`},
		{FormatResponses, `{"model":"m","tools":[{"type":"function","name":"f"},{"type":"web_search_preview"}]}`, `invalid "tools": tool 1 has type "web_search_preview", which is billed per use and is not supported`},
		{FormatResponses, `{"model":"m","tools":[{"type":"file_search","vector_store_ids":["v"]}]}`, `invalid "tools": tool 0 has type "file_search", which is billed per use and is not supported`},
		{FormatResponses, `{"model":"m","tools":[{"type":"code_interpreter"}]}`, `invalid "tools": tool 0 has type "code_interpreter", which is billed per use and is not supported`},
		{FormatResponses, `{"model":"m","tools":[{"type":"image_generation"}]}`, `invalid "tools": tool 0 has type "image_generation", which is billed per use and is not supported`},
		{FormatResponses, `{"model":"m","tools":[{"type":"mcp","server_url":"u"}]}`, `invalid "tools": tool 0 has type "mcp", which is billed per use and is not supported`},
		{FormatResponses, `{"model":"m","tools":[{"name":"f"}]}`, `invalid "tools": tool 0 has type "", which is billed per use and is not supported`},
		{FormatResponses, `{"model":"m","tools":[{"type":"function","TYPE":"web_search"}]}`, `invalid "tools": tool 0 also gives "type" as "TYPE", which differs only in letter case`},
		{FormatResponses, `{"model":"m","tools":[{"type":"function","type":"web_search"}]}`, `invalid "tools": tool 0 gives "type" twice`},
		{FormatResponses, `{"model":"m","tools":[{"type":7}]}`, `invalid "tools": tool 0 has a "type" that is not a string`},
		{FormatResponses, `{"model":"m","tools":["web_search"]}`, `invalid "tools": tool 0 is not an object`},
		{FormatResponses, `{"model":"m","tools":{}}`, `invalid "tools": must be an array or null`},
		{FormatMessages, `{"model":"m","tools":[{"name":"f","input_schema":{}},{"type":"web_search_20250305","name":"web_search"}]}`, `invalid "tools": tool 1 has type "web_search_20250305", which is billed per use and is not supported`},
		{FormatMessages, `{"model":"m","tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]}`, `invalid "tools": tool 0 has type "web_fetch_20250910", which is billed per use and is not supported`},
		{FormatMessages, `{"model":"m","tools":[{"type":"code_execution_20250825","name":"code_execution"}]}`, `invalid "tools": tool 0 has type "code_execution_20250825", which is billed per use and is not supported`},
		{FormatMessages, `{"model":"m","mcp_servers":[{"type":"url","url":"u","name":"n"}]}`, `invalid "mcp_servers": MCP servers are not supported`},
		{FormatMessages, `{"model":"m","Mcp_Servers":[]}`, `invalid "mcp_servers": also given as "Mcp_Servers", which differs only in letter case`},
		{FormatChat, `{"model":"m","tools":[],"tools":[]}`, `invalid "tools": given twice`},
		{FormatCompletions, `{"model":"m","prompt":[` + strings.Repeat(`"p",`, MaxPrompts) + `"p"]}`, `invalid "prompt": holds more than 2048 prompts`},
		// One-hour cache writes, wherever a cache_control asks for them.
		{FormatMessages, `{"model":"m","system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral","ttl":"1h"}}]}`, cacheTTLError},
		{FormatMessages, `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x","cache_control":{"ttl":"1h","type":"ephemeral"}}]}]}`, cacheTTLError},
		{FormatMessages, `{"model":"m","tools":[{"name":"f","input_schema":{},"cache_control":{"type":"ephemeral","ttl":"60m"}}]}`, cacheTTLError},
		{FormatMessages, `{"model":"m","cache_control":{"type":"ephemeral","ttl":"1h"}}`, cacheTTLError},
		{FormatMessages, `{"model":"m","system":[{"text":"s","Cache_Control":{"TTL":"1h"}}]}`, cacheTTLError},
		{FormatMessages, `{"model":"m","system":[{"text":"s","cache_c\u006fntrol":{"t\u0074l":"1h"}}]}`, cacheTTLError},
		{FormatMessages, `{"model":"m","system":[{"text":"s","cache_control":{"ttl":3600}}]}`, cacheTTLError},
	} {
		t.Run(tc.msg, func(t *testing.T) {
			_, err := ParseRequest(tc.format, []byte(tc.body), true)
			var fe *FieldError
			if !errors.As(err, &fe) || err.Error() != tc.msg {
				t.Fatalf("%s: error %v, want %s", tc.body, err, tc.msg)
			}
		})
	}
}

// cacheTTLError is ParseRequest's refusal of a one-hour cache write.
const cacheTTLError = `invalid "cache_control": only the default "5m" ttl is accepted: one-hour cache writes are priced higher`

// TestParseRequestShapes: accepted bodies and what is read from them.
func TestParseRequestShapes(t *testing.T) {
	for _, tc := range []struct {
		format            Format
		body              string
		maxOut, choices   int64
		stream, wantsUsed bool
	}{
		// Output limits per format: a limit the format does not honour is
		// checked but not counted.
		{FormatChat, `{"model":"m","max_tokens":100,"max_completion_tokens":300}`, 300, 1, false, false},
		{FormatChat, `{"model":"m","max_tokens":null,"max_completion_tokens":0}`, 0, 1, false, false},
		{FormatChat, `{"model":"m","max_output_tokens":100}`, 0, 1, false, false},
		{FormatCompletions, `{"model":"m","max_tokens":2147483647,"max_completion_tokens":5}`, 2147483647, 1, false, false},
		{FormatResponses, `{"model":"m","max_output_tokens":500,"max_tokens":9000}`, 500, 1, false, false},
		{FormatResponses, `{"model":"m","max_tokens":10}`, 0, 1, false, false},
		{FormatMessages, `{"model":"m","max_tokens":1024,"max_output_tokens":5}`, 1024, 1, false, false},
		{FormatEmbeddings, `{"model":"m","max_tokens":10}`, 0, 1, false, false},
		{FormatUnknown, `{"model":"m","max_tokens":10,"max_output_tokens":20}`, 20, 1, false, false},
		// Choices: the larger of n and best_of, for chat and completions.
		{FormatChat, `{"model":"m","n":4}`, 0, 4, false, false},
		{FormatChat, `{"model":"m","n":null,"best_of":null}`, 0, 1, false, false},
		{FormatCompletions, `{"model":"m","n":2,"best_of":5,"max_tokens":16}`, 16, 5, false, false},
		{FormatCompletions, `{"model":"m","n":128,"best_of":3}`, 0, 128, false, false},
		// A completions prompt array: n (best_of) completions for each prompt.
		{FormatCompletions, `{"model":"m","prompt":["a","b","c"],"n":2,"max_tokens":16}`, 16, 6, false, false},
		{FormatCompletions, `{"model":"m","prompt":[[1,2],[3]],"best_of":3}`, 0, 6, false, false},
		{FormatCompletions, `{"model":"m","prompt":["a",[1],7]}`, 0, 3, false, false},
		{FormatCompletions, `{"model":"m","prompt":[1,2,-3]}`, 0, 1, false, false},
		{FormatCompletions, `{"model":"m","prompt":"one","n":4}`, 0, 4, false, false},
		{FormatCompletions, `{"model":"m","prompt":[]}`, 0, 1, false, false},
		{FormatCompletions, `{"model":"m","prompt":null}`, 0, 1, false, false},
		{FormatChat, `{"model":"m","prompt":["a","b"],"n":2}`, 0, 2, false, false},
		{FormatResponses, `{"model":"m","n":4}`, 0, 1, false, false},
		// Streams and stream options.
		{FormatChat, `{"model":"m","stream":true,"stream_options":{"include_usage":null,"x":{"INCLUDE_USAGE":1}}}`, 0, 1, true, false},
		{FormatChat, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, 0, 1, true, true},
		{FormatChat, `{"model":"m","stream":true,"stream_opti\u006fns":{"include_\u0075sage":true}}`, 0, 1, true, true},
		// Fields that do not change the price.
		{FormatChat, `{"model":"m","service_tier":"auto","modalities":["text"],"audio":null,"web_search_options":null,"tools":[{"type":"web_search"}]}`, 0, 1, false, false},
		{FormatChat, `{"model":"m","service_tier":null,"modalities":null,"prediction":{"type":"content","content":"x"}}`, 0, 1, false, false},
		{FormatCompletions, `{"model":"m","service_tier":"default","background":true,"mcp_servers":[{}]}`, 0, 1, false, false},
		{FormatResponses, `{"model":"m","background":false,"tools":[{"type":"function","name":"f"},{"type":"custom","name":"c"}],"modalities":["audio"]}`, 0, 1, false, false},
		{FormatResponses, `{"model":"m","background":null,"tools":null}`, 0, 1, false, false},
		{FormatMessages, `{"model":"m","service_tier":"standard_only","mcp_servers":[],"tools":[{"name":"f"},{"type":"custom","name":"g"},{"type":null,"name":"h"},{"type":"bash_20250124","name":"bash"},{"type":"text_editor_20250728","name":"str_replace_based_edit_tool"},{"type":"computer_20250124","name":"computer"},{"type":"memory_20250818","name":"memory"}]}`, 0, 1, false, false},
		// The default cache lifetime, and "ttl" outside a cache_control.
		{FormatMessages, `{"model":"m","system":[{"type":"text","text":"ttl 1h","cache_control":{"type":"ephemeral","ttl":"5m"}}],"messages":[{"role":"user","content":[{"type":"text","text":"x","cache_control":{"type":"ephemeral","ttl":null}}]}]}`, 0, 1, false, false},
		{FormatMessages, `{"model":"m","metadata":{"ttl":"1h"},"tools":[{"name":"f","input_schema":{"properties":{"ttl":{"type":"string"}}}}]}`, 0, 1, false, false},
		{FormatChat, `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x","cache_control":{"ttl":"1h"}}]}]}`, 0, 1, false, false},
		// Message content is never restricted.
		{FormatChat, `{"model":"m","messages":[{"role":"user","content":"x","MODEL":"y","model":1,"stream":"yes","Stream":2}]}`, 0, 1, false, false},
	} {
		t.Run(tc.body, func(t *testing.T) {
			r, err := ParseRequest(tc.format, []byte(tc.body), false)
			if err != nil {
				t.Fatal(err)
			}
			if r.Model != "m" || r.MaxOutputTokens != tc.maxOut || r.Choices != tc.choices || r.Stream != tc.stream || r.ClientWantsUsage != tc.wantsUsed {
				t.Errorf("got %+v", *r)
			}
		})
	}
}

// TestParseRequestMediaHold: media parts raise the input estimate.
func TestParseRequestMediaHold(t *testing.T) {
	body := []byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"compare"},{"type":"image_url","image_url":{"url":"https://x/a.png"}},{"type":"image_url","image_url":{"url":"https://x/b.png"}}]}]}`)
	r, err := ParseRequest(FormatChat, body, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := (int64(len(body))+1)/2 + 2*MediaPartTokens; r.MediaParts != 2 || r.InputEstimate != want {
		t.Errorf("MediaParts %d, InputEstimate %d, want 2, %d", r.MediaParts, r.InputEstimate, want)
	}
}

// TestFoldsTo checks the case-variant test against the decoders it stands
// for: every key bytes.EqualFold or encoding/json matches to a name, and the
// upper-casing of İ and ı, is caught.
func TestFoldsTo(t *testing.T) {
	for _, tc := range []struct {
		key, name string
		want      bool
	}{
		{"MODEL", "model", true},
		{"mOdEl", "model", true},
		{"model", "model", true}, // equal is a fold too; callers test exact first
		{"ſtream", "stream", true},
		{"max_toKens", "max_tokens", true},
		{"İnput", "input", true},
		{"ınput", "input", true},
		{"models", "model", false},
		{"mode", "model", false},
		{"max-tokens", "max_tokens", false},
		{"MAX_TOKENS", "max_tokens", true},
		{"max\x7ftokens", "max_tokens", false},
		{"mod\xffl", "model", false},
		{"ｍodel", "model", false}, // full-width: no decoder folds it
	} {
		if got := foldsTo([]byte(tc.key), tc.name); got != tc.want {
			t.Errorf("foldsTo(%q, %q) = %v, want %v", tc.key, tc.name, got, tc.want)
		}
		if !tc.want {
			continue
		}
		// encoding/json reads each of these keys as the field, except the
		// two İ/ı forms that only upper-casing decoders take.
		if strings.ContainsAny(tc.key, "İı") {
			continue
		}
		if !bytes.EqualFold([]byte(tc.key), []byte(tc.name)) {
			t.Errorf("bytes.EqualFold(%q, %q) is false", tc.key, tc.name)
		}
		typ := reflect.StructOf([]reflect.StructField{{Name: "X", Type: reflect.TypeFor[json.RawMessage](),
			Tag: reflect.StructTag(`json:"` + tc.name + `"`)}})
		v := reflect.New(typ)
		key, _ := json.Marshal(tc.key)
		if err := json.Unmarshal([]byte(`{`+string(key)+`:1}`), v.Interface()); err != nil || v.Elem().Field(0).Len() == 0 {
			t.Errorf("encoding/json does not read %q as %q (%v)", tc.key, tc.name, err)
		}
	}
	// Exhaustive over the runes: a key of one rune folds to a one-letter
	// name exactly when simple case folding (bytes.EqualFold, encoding/json)
	// or upper- or lower-casing takes the rune to that letter.
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		var letters [26]bool
		mark := func(x rune) {
			if x = unicode.ToLower(x); 'a' <= x && x <= 'z' && x < utf8.RuneSelf {
				letters[x-'a'] = true
			}
		}
		for f := unicode.SimpleFold(r); ; f = unicode.SimpleFold(f) {
			if f < utf8.RuneSelf {
				mark(f)
			}
			if f == r {
				break
			}
		}
		if u := unicode.ToUpper(r); u < utf8.RuneSelf {
			mark(u)
		}
		if l := unicode.ToLower(r); l < utf8.RuneSelf {
			mark(l)
		}
		k := []byte(string(r))
		for c := byte('a'); c <= 'z'; c++ {
			if got := foldsTo(k, string(c)); got != letters[c-'a'] {
				t.Fatalf("foldsTo(%q, %q) = %v, want %v", k, string(c), got, letters[c-'a'])
			}
		}
	}
}

// TestParseRequestRefusesPricedExtras: audio input and Anthropic's priced
// options (fast output, a pinned region) are refused, naming the field.
func TestParseRequestRefusesPricedExtras(t *testing.T) {
	for _, tc := range []struct {
		f     Format
		body  string
		field string
	}{
		{FormatChat, `{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AA==","format":"wav"}}]}]}`, "messages"},
		{FormatChat, `{"model":"m","messages":[{"role":"assistant","audio":{"id":"audio_1"}}]}`, "messages"},
		{FormatResponses, `{"model":"m","input":[{"role":"user","content":[{"type":"INPUT_AUDIO"}]}]}`, "input"},
		{FormatMessages, `{"model":"m","max_tokens":10,"speed":"fast","messages":[]}`, "speed"},
		{FormatMessages, `{"model":"m","max_tokens":10,"SPEED":"standard","messages":[]}`, "speed"},
		{FormatMessages, `{"model":"m","max_tokens":10,"inference_geo":"us","messages":[]}`, "inference_geo"},
	} {
		_, err := ParseRequest(tc.f, []byte(tc.body), true)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: %v, want a FieldError on %s", tc.body, err, tc.field)
		}
	}
	for _, body := range []string{
		`{"model":"m","max_tokens":10,"speed":"standard","inference_geo":"global","messages":[]}`,
		`{"model":"m","max_tokens":10,"speed":null,"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]}`,
	} {
		if _, err := ParseRequest(FormatMessages, []byte(body), true); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
}
