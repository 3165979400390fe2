package meter

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// This file holds the differential fuzz test of the one-reading rule: any
// body ParseRequest accepts reads the same to the gateway, to a Go upstream
// (encoding/json: keys matched regardless of case, the last wins), to a
// Python one (json: keys matched exactly, the last wins; pydantic then
// coerces "true" or "100", which the type checks rule out) and to a
// decoder where the first of duplicate keys wins.

// goReading holds the guarded fields as encoding/json fills a struct:
// json.RawMessage keeps null and absent apart from values and any type.
type goReading struct {
	Model               json.RawMessage `json:"model"`
	Stream              json.RawMessage `json:"stream"`
	StreamOptions       json.RawMessage `json:"stream_options"`
	MaxTokens           json.RawMessage `json:"max_tokens"`
	MaxCompletionTokens json.RawMessage `json:"max_completion_tokens"`
	MaxOutputTokens     json.RawMessage `json:"max_output_tokens"`
	N                   json.RawMessage `json:"n"`
	BestOf              json.RawMessage `json:"best_of"`
	ServiceTier         json.RawMessage `json:"service_tier"`
	Modalities          json.RawMessage `json:"modalities"`
	Audio               json.RawMessage `json:"audio"`
	WebSearchOptions    json.RawMessage `json:"web_search_options"`
	Background          json.RawMessage `json:"background"`
	Tools               json.RawMessage `json:"tools"`
	MCPServers          json.RawMessage `json:"mcp_servers"`
	Messages            json.RawMessage `json:"messages"`
	Input               json.RawMessage `json:"input"`
	Prompt              json.RawMessage `json:"prompt"`
	System              json.RawMessage `json:"system"`
	Instructions        json.RawMessage `json:"instructions"`
}

// reading is one decoder's view of a body: the guarded members by name,
// nil when absent, and how it reads members of nested objects.
type reading struct {
	name   string
	fields map[string]json.RawMessage
	member func(obj json.RawMessage, name string) json.RawMessage
}

// readGo reads body as encoding/json does into a struct.
func readGo(t *testing.T, body []byte) reading {
	var g goReading
	if err := json.Unmarshal(body, &g); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	raw := map[string]json.RawMessage{
		"model": g.Model, "stream": g.Stream, "stream_options": g.StreamOptions, "max_tokens": g.MaxTokens,
		"max_completion_tokens": g.MaxCompletionTokens, "max_output_tokens": g.MaxOutputTokens, "n": g.N,
		"best_of": g.BestOf, "service_tier": g.ServiceTier, "modalities": g.Modalities, "audio": g.Audio,
		"web_search_options": g.WebSearchOptions, "background": g.Background, "tools": g.Tools,
		"mcp_servers": g.MCPServers, "messages": g.Messages, "input": g.Input, "prompt": g.Prompt,
		"system": g.System, "instructions": g.Instructions,
	}
	return reading{name: "encoding/json struct", fields: raw, member: func(obj json.RawMessage, name string) json.RawMessage {
		var v struct {
			IncludeUsage json.RawMessage `json:"include_usage"`
			Type         json.RawMessage `json:"type"`
		}
		if json.Unmarshal(obj, &v) != nil {
			return nil
		}
		if name == "type" {
			return v.Type
		}
		return v.IncludeUsage
	}}
}

// readExact reads body with exact keys, the last wins, like Python's json.
func readExact(t *testing.T, body []byte) reading {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("map reading: %v", err)
	}
	return reading{name: "exact keys", fields: m, member: func(obj json.RawMessage, name string) json.RawMessage {
		var m map[string]json.RawMessage
		if json.Unmarshal(obj, &m) != nil {
			return nil
		}
		return m[name]
	}}
}

// readFirst reads body with exact keys, the first wins, as some decoders
// do (a streaming one that stops at the first match).
func readFirst(t *testing.T, body []byte) reading {
	first := func(obj []byte) map[string]json.RawMessage {
		m := map[string]json.RawMessage{}
		dec := json.NewDecoder(bytes.NewReader(obj))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			return nil
		}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return nil
			}
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return nil
			}
			if k := tok.(string); m[k] == nil {
				m[k] = v
			}
		}
		return m
	}
	m := first(body)
	if m == nil {
		t.Fatalf("first-wins reading failed: %s", body)
	}
	return reading{name: "exact keys, first wins", fields: m, member: func(obj json.RawMessage, name string) json.RawMessage {
		return first(obj)[name]
	}}
}

// prompts is how many prompts a completions prompt holds, as the API
// reads it: one string, one array of token numbers, or an array of
// strings or token arrays (each a prompt). An array mixing numbers with
// anything else is counted element by element, the most prompts any
// reading of it gives.
func prompts(t *testing.T, name string, v []byte) int64 {
	var arr []any
	if len(v) == 0 || v[0] != '[' {
		return 1
	}
	if err := json.Unmarshal(v, &arr); err != nil {
		t.Fatalf("%s: prompt %s: %v", name, v, err)
	}
	for _, e := range arr {
		if _, isNumber := e.(float64); !isNumber {
			return int64(len(arr))
		}
	}
	return 1
}

// billing is what a reading makes of the billing fields.
type billing struct {
	model                  string
	stream, includeUsage   bool
	maxOut, choices        int64
	messages, input, tools string // raw, compared between readings
}

// interpret reads r's billing fields for format f, failing the test where
// a decoder that coerces types (pydantic) could read them differently, or
// where a price-changing field got through.
func interpret(t *testing.T, f Format, r reading) billing {
	t.Helper()
	get := func(name string) []byte {
		return trimWS(r.fields[name])
	}
	var b billing
	if err := json.Unmarshal(get("model"), &b.model); err != nil || get("model")[0] != '"' {
		t.Fatalf("%s: model %s", r.name, get("model"))
	}
	boolean := func(what string, v []byte) bool {
		switch string(v) {
		case "", "null", "false":
			return false
		case "true":
			return true
		}
		t.Fatalf("%s: %s is %s, not a bool", r.name, what, v)
		return false
	}
	integer := func(name string, lo, hi int64) int64 {
		v := get(name)
		if len(v) == 0 || string(v) == "null" {
			return 0
		}
		var n int64
		if strings.Trim(string(v), "0123456789") != "" || json.Unmarshal(v, &n) != nil || n < lo || n > hi {
			t.Fatalf("%s: %s is %s", r.name, name, v)
		}
		return n
	}
	b.stream = boolean("stream", get("stream"))
	if opts := get("stream_options"); len(opts) > 0 && string(opts) != "null" {
		if opts[0] != '{' {
			t.Fatalf("%s: stream_options %s", r.name, opts)
		}
		b.includeUsage = boolean("include_usage", trimWS(r.member(opts, "include_usage")))
	}
	mt, mct, mot := integer("max_tokens", 0, MaxOutputLimit), integer("max_completion_tokens", 0, MaxOutputLimit),
		integer("max_output_tokens", 0, MaxOutputLimit)
	n, bestOf := integer("n", 1, MaxChoices), integer("best_of", 1, MaxChoices)
	b.choices = 1
	switch f {
	case FormatChat:
		b.maxOut, b.choices = max(mt, mct), max(1, n, bestOf)
	case FormatCompletions:
		b.maxOut, b.choices = mt, prompts(t, r.name, get("prompt"))*max(1, n, bestOf)
	case FormatResponses:
		b.maxOut = mot
	case FormatMessages:
		b.maxOut = mt
	case FormatUnknown:
		b.maxOut = max(mt, mct, mot)
	}
	b.messages, b.input, b.tools = string(get("messages")), string(get("input")), string(get("tools"))

	// Price-changing fields.
	var tier string
	if v := get("service_tier"); len(v) > 0 && string(v) != "null" {
		if json.Unmarshal(v, &tier) != nil || tier != "auto" && tier != "default" && (f != FormatMessages || tier != "standard_only") {
			t.Fatalf("%s: service_tier %s", r.name, v)
		}
	}
	notNull := func(name string) bool { v := get(name); return len(v) > 0 && string(v) != "null" }
	tools := func(allowed func(typ string, isNull bool) bool) {
		var list []json.RawMessage
		if notNull("tools") && json.Unmarshal(get("tools"), &list) != nil {
			t.Fatalf("%s: tools %s", r.name, get("tools"))
		}
		for _, tool := range list {
			typ := trimWS(r.member(tool, "type"))
			var s string
			if len(typ) > 0 && string(typ) != "null" && json.Unmarshal(typ, &s) != nil {
				t.Fatalf("%s: tool type %s", r.name, typ)
			}
			if !allowed(s, len(typ) == 0 || string(typ) == "null") {
				t.Fatalf("%s: tool type %q", r.name, s)
			}
		}
	}
	switch f {
	case FormatChat:
		var mods []string
		if notNull("modalities") && json.Unmarshal(get("modalities"), &mods) != nil {
			t.Fatalf("%s: modalities %s", r.name, get("modalities"))
		}
		for _, m := range mods {
			if strings.EqualFold(m, "audio") {
				t.Fatalf("%s: audio modality", r.name)
			}
		}
		if notNull("audio") || notNull("web_search_options") {
			t.Fatalf("%s: audio %s, web_search_options %s", r.name, get("audio"), get("web_search_options"))
		}
	case FormatResponses:
		if boolean("background", get("background")) {
			t.Fatalf("%s: background", r.name)
		}
		tools(responsesTool)
	case FormatMessages:
		if v := get("mcp_servers"); notNull("mcp_servers") && !isEmptyArray(v) {
			t.Fatalf("%s: mcp_servers %s", r.name, v)
		}
		tools(messagesTool)
	}
	return b
}

// FuzzRequestOneReading: for every body ParseRequest accepts, the gateway,
// encoding/json (case-insensitive keys) and exact-key readings (the last
// or the first of duplicates winning) see the
// same model, stream, include_usage, output limits, n and best_of (and the
// same messages, input and tools), no reading finds a price-changing field,
// and the body rewritten to ask for usage reads the same again.
//
//	go test -run '^$' -fuzz '^FuzzRequestOneReading$' -fuzztime 5m ./meter
func FuzzRequestOneReading(f *testing.F) {
	for _, b := range []string{
		// The attacks.
		`{"model":"cheap","MODEL":"dear"}`,
		`{"model":"cheap","model":"dear"}`,
		`{"model":"cheap","mod\u0065l":"dear"}`,
		`{"model":"m","stream":true,"STREAM":false,"STREAM_OPTIONS":{"include_usage":false}}`,
		`{"model":"m","ſtream":true,"stream_options":{"INCLUDE_USAGE":false}}`,
		`{"model":"m","max_tokens":16,"max_toKens":100000}`,
		`{"model":"m","stream":"true","max_tokens":"100000","n":"8"}`,
		`{"model":"m","max_tokens":1e5,"n":2.0,"best_of":-1}`,
		`{"model":"m","stream":"true"}`,
		`{"model":"m","max_tokens":100.0}`,
		`{"model":"m","max_completion_tokens":"100000"}`,
		`{"model":"m","n":"2"}`,
		`{"model":"m","best_of":[3]}`,
		`{"model":"m","stream_options":{"include_usage":"false"}}`,
		`{"model":"0","stream_options":{"include_usage":true}}`,
		`{"model":"m","service_tier":"priority","modalities":["audio"],"audio":{},"web_search_options":{}}`,
		`{"model":"m","background":true,"tools":[{"type":"web_search"},{"TYPE":"mcp","type":"function"}]}`,
		`{"model":"m","mcp_servers":[{}],"tools":[{"type":"code_execution_20250825"}]}`,
		// Normal bodies.
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":100,"n":2}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false,"include_obfuscation":true}}`,
		`{"model":"m","prompt":"x","best_of":3,"n":2,"max_tokens":5,"stream":true,"stream_options":null}`,
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"u"}]}],"max_output_tokens":9,"tools":[{"type":"function","name":"f"}]}`,
		`{"model":"m","max_tokens":1024,"messages":[{"role":"user","content":[{"type":"image","source":{}}]}],"tools":[{"name":"t"},{"type":"bash_20250124"}],"service_tier":"standard_only"}`,
	} {
		for fm := range uint8(6) {
			f.Add(fm, []byte(b))
		}
	}
	names, _ := filepath.Glob(filepath.Join("..", "testdata", "meter", "requests", "*.json"))
	prefixes := map[string]Format{"chat_": FormatChat, "completions_": FormatCompletions, "embeddings_": FormatEmbeddings,
		"responses_": FormatResponses, "messages_": FormatMessages}
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for p, fm := range prefixes {
			if strings.HasPrefix(filepath.Base(name), p) {
				f.Add(uint8(fm), b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, format uint8, body []byte) {
		fm := Format(format % 6)
		r, err := ParseRequest(fm, body, true)
		if err != nil {
			return
		}
		got := billing{model: r.Model, stream: r.Stream, includeUsage: r.ClientWantsUsage, maxOut: r.MaxOutputTokens, choices: r.Choices}
		readings := []reading{readGo(t, body), readExact(t, body), readFirst(t, body)}
		var first billing
		for i, rd := range readings {
			want := interpret(t, fm, rd)
			if i == 0 {
				first = want
			} else if want != first {
				t.Fatalf("%s reads %+v, %s reads %+v", readings[0].name, first, rd.name, want)
			}
			want.messages, want.input, want.tools = "", "", ""
			switch fm {
			case FormatEmbeddings:
				want.stream, want.includeUsage = false, false
			case FormatChat, FormatCompletions:
			default:
				want.includeUsage = false // not read
			}
			if got != want {
				t.Fatalf("gateway reads %+v, %s reads %+v", got, rd.name, want)
			}
		}
		// The media parts: the estimate counts the same, and no part that
		// encoding/json sees (keys in any case) is missed.
		if p, ok := gatherPrompt(fm, body); ok && fm != FormatUnknown && fm != FormatEmbeddings && p.media != r.MediaParts {
			t.Fatalf("MediaParts %d, the estimate counts %d", r.MediaParts, p.media)
		}
		var whole map[string]any
		_ = json.Unmarshal(body, &whole)
		var ref int64
		for k, v := range whole {
			if fm == FormatChat || fm == FormatMessages {
				if foldsTo([]byte(k), "messages") {
					ref += refMedia(v, 0)
				}
			} else if fm == FormatResponses && foldsTo([]byte(k), "input") {
				ref += refMedia(v, 0)
			}
		}
		if r.MediaParts < ref {
			t.Fatalf("MediaParts %d, encoding/json finds %d", r.MediaParts, ref)
		}
		if r.InputEstimate != min(max(1, (int64(len(body))+1)/2)+r.MediaParts*MediaPartTokens, maxCount) {
			t.Fatalf("InputEstimate %d for %d bytes and %d media parts", r.InputEstimate, len(body), r.MediaParts)
		}
		if !r.InjectedUsage {
			if !bytes.Equal(r.Body, body) {
				t.Fatal("body rewritten without injection")
			}
			return
		}
		// The rewritten body reads the same, now with include_usage.
		again, err := ParseRequest(fm, r.Body, true)
		if err != nil || again.InjectedUsage || !again.ClientWantsUsage {
			t.Fatalf("rewritten body %s: %+v, %v", r.Body, again, err)
		}
		for _, rd := range []reading{readGo(t, r.Body), readExact(t, r.Body), readFirst(t, r.Body)} {
			want := interpret(t, fm, rd)
			if !want.includeUsage {
				t.Fatalf("%s: rewritten body %s has no include_usage", rd.name, r.Body)
			}
			want.includeUsage = first.includeUsage
			if want != first {
				t.Fatalf("%s reads the rewritten body as %+v, the original as %+v", rd.name, want, first)
			}
		}
	})
}

// refMedia counts media parts in a value decoded by encoding/json, as
// countMedia documents it.
func refMedia(v any, depth int) int64 {
	if depth > maxMediaDepth {
		return 0
	}
	var n int64
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			n += refMedia(e, depth+1)
		}
	case map[string]any:
		media := false
		for k, val := range v {
			key := []byte(k)
			switch {
			case foldsTo(key, "content"), foldsTo(key, "output"):
				n += refMedia(val, depth+1)
			case foldsTo(key, "type"):
				s, _ := val.(string)
				for _, name := range mediaTypes {
					media = media || foldsTo([]byte(s), name)
				}
			case foldsTo(key, "audio"):
				_, isObj := val.(map[string]any)
				media = media || isObj
			}
		}
		if media {
			n++
		}
	}
	return n
}
