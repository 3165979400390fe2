package meter

import (
	"bytes"
	"testing"
)

// Rename replaces the model value where ParseRequest found it, before or
// after an injected stream_options, and the renamed body reads as the same
// request for the provider's model.
func TestRename(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
		inject           bool
	}{
		{"plain", `{"model":"deepseek-chat","messages":[]}`,
			`{"model":"deepseek-v4-flash","messages":[]}`, false},
		{"escaped and spaced", `{ "messages":[], "model" : "deepseek\u002dchat" }`,
			`{ "messages":[], "model" : "deepseek-v4-flash" }`, false},
		{"injected before the model", `{"stream":true,"model":"deepseek-chat"}`,
			`{"stream_options":{"include_usage":true},"stream":true,"model":"deepseek-v4-flash"}`, true},
		{"patched options before the model", `{"stream":true,"stream_options":{"x":1},"model":"deepseek-chat"}`,
			`{"stream":true,"stream_options":{"include_usage":true,"x":1},"model":"deepseek-v4-flash"}`, true},
		{"patched options after the model", `{"model":"deepseek-chat","stream":true,"stream_options":{}}`,
			`{"model":"deepseek-v4-flash","stream":true,"stream_options":{"include_usage":true}}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := []byte(tc.body)
			r, err := ParseRequest(FormatChat, orig, tc.inject)
			if err != nil {
				t.Fatal(err)
			}
			est := r.InputEstimate
			r.Rename("deepseek-v4-flash")
			if string(r.Body) != tc.want || r.Model != "deepseek-v4-flash" {
				t.Fatalf("body %s model %q, want %s", r.Body, r.Model, tc.want)
			}
			if string(orig) != tc.body {
				t.Fatal("the client's body was changed in place")
			}
			if r.InputEstimate != est {
				t.Fatal("the estimate changed")
			}
			again, err := ParseRequest(FormatChat, r.Body, false)
			if err != nil || again.Model != "deepseek-v4-flash" || again.Stream != r.Stream {
				t.Fatalf("renamed body reads %+v, %v", again, err)
			}
			// A second rename replaces the same value again.
			r.Rename(`a"b`)
			if !bytes.Contains(r.Body, []byte(`"model":"a\"b"`)) && !bytes.Contains(r.Body, []byte(`"model" : "a\"b"`)) {
				t.Fatalf("second rename: %s", r.Body)
			}
		})
	}
}

// An unchanged name keeps the client's slice.
func TestRenameSameName(t *testing.T) {
	body := []byte(`{"model":"m"}`)
	r, err := ParseRequest(FormatChat, body, false)
	if err != nil {
		t.Fatal(err)
	}
	r.Rename("m")
	if &r.Body[0] != &body[0] {
		t.Fatal("body copied for the same name")
	}
}
