package meter

import (
	"encoding/json"
	"strings"
	"testing"
)

// validCases are inputs on both sides of each rule json.Valid applies.
var validCases = []string{
	``, ` `, `{}`, `[]`, ` { } `, `{`, `}`, `[`, `]`, `{]`, `[}`, `{}}`, `[]]`, `{}{}`, `{} x`,
	`0`, `-0`, `01`, `-`, `-a`, `1.`, `1.5`, `.5`, `1e`, `1e+`, `1e+5`, `1E-5`, `1e5.0`, `1.5e3`, `-12.0e-0`, `+1`, `0x1`,
	`true`, `false`, `null`, `tru`, `truex`, `True`, `nul`, `null,`, `[true,false,null]`, `[true false]`,
	`""`, `"a"`, `"\""`, `"\\"`, `"\/"`, `"\b\f\n\r\t"`, `"\u00e9"`, `"\u00E9"`, `"\u00g9"`, `"\u00"`, `"\x"`, `"\`, `"abc`,
	"\"a\tb\"", "\"a\x00b\"", "\"a\x1fb\"", "\"a\x7fb\"", "\"\xff\xfe\"", "\"é\"",
	`{"a":1}`, `{"a" : 1 , "b" : [1, 2, {"c": null}]}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{,"a":1}`, `{"a":1 "b":2}`,
	`{1:2}`, `{"a":1}x`, `[1,]`, `[,1]`, `[1 2]`, `[[[]]]`, `[[[]]`, `{"a":{"b":{"c":[{}]}}}`,
	"\t\n\r {\"a\":\n1}\r\n", "\v{}", "{}\x00",
}

func TestValidJSONMatchesEncodingJSON(t *testing.T) {
	for _, c := range validCases {
		if got, want := validJSON([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("validJSON(%q) = %v, json.Valid says %v", c, got, want)
		}
	}
}

// TestValidJSONNestingBound checks the nesting bound: encoding/json takes
// 10,000 levels and refuses one more, of arrays, objects or both.
func TestValidJSONNestingBound(t *testing.T) {
	for _, depth := range []int{63, 64, 65, 127, 128, maxNesting - 1, maxNesting, maxNesting + 1, 3 * maxNesting} {
		for name, open := range map[string]string{"arrays": "[", "objects": `{"k":`, "mixed": `[{"k":`} {
			close := map[string]string{"arrays": "]", "objects": "}", "mixed": "}]"}[name]
			n := depth
			if name == "mixed" {
				n = depth / 2
			}
			in := []byte(strings.Repeat(open, n) + "0" + strings.Repeat(close, n))
			if got, want := validJSON(in), json.Valid(in); got != want {
				t.Errorf("%s nested %d deep: validJSON %v, json.Valid %v", name, n*len(close), got, want)
			}
		}
	}
}

// FuzzValidJSON holds validJSON to json.Valid on any input: the gateway
// refuses exactly the bodies encoding/json would.
func FuzzValidJSON(f *testing.F) {
	for _, c := range validCases {
		f.Add([]byte(c))
	}
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi \u00e9 \"q\""}],"max_tokens":64,"temperature":0.5e-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid says %v", b, got, want)
		}
	})
}

var benchRequestBody = []byte(`{"model":"deepseek-chat","messages":[{"role":"system","content":"You are a helpful assistant."},` +
	`{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64}`)

func BenchmarkValidJSON(b *testing.B) {
	b.SetBytes(int64(len(benchRequestBody)))
	for b.Loop() {
		if !validJSON(benchRequestBody) {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkEncodingJSONValid(b *testing.B) {
	b.SetBytes(int64(len(benchRequestBody)))
	for b.Loop() {
		if !json.Valid(benchRequestBody) {
			b.Fatal("invalid")
		}
	}
}
