package meter

import (
	"bytes"
	"testing"
)

// lineEndings rewrites the LF line ends of b.
func lineEndings(b []byte, eol string) []byte {
	return bytes.ReplaceAll(b, []byte("\n"), []byte(eol))
}

func TestLineEndings(t *testing.T) {
	for _, tc := range transcripts {
		if !tc.want.Stream {
			continue
		}
		for _, eol := range []string{"\r\n", "\r"} {
			t.Run(tc.file+"/"+map[string]string{"\r\n": "CRLF", "\r": "CR"}[eol], func(t *testing.T) {
				in := lineEndings(readTestdata(t, tc.file), eol)
				want := in
				if tc.client != "" {
					want = lineEndings(readTestdata(t, tc.client), eol)
				}
				req := &Request{Format: tc.format, Stream: true, InjectedUsage: tc.inject, ClientWantsUsage: tc.wants}
				for how, pieces := range splits(in, 99) {
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
}

func TestCRLFSplitAcrossFeeds(t *testing.T) {
	// The CR of a CRLF ends one Feed, the LF starts the next: one line end,
	// not a blank line that would dispatch an event early.
	pieces := [][]byte{
		[]byte("data: {\"choices\":[],\r"),
		[]byte("\ndata: \"usage\":{\"prompt_tokens\":3}}\r"),
		[]byte("\n\r"),
		[]byte("\ndata: [DONE]\r\n\r\n"),
	}
	req := &Request{Format: FormatChat, Stream: true, InjectedUsage: true}
	got, out := observe(t, req, 200, sseType, pieces)
	if !bytes.Equal(out, bytes.Join(pieces, nil)) {
		t.Errorf("client got %q", out)
	}
	// The two data lines join with "\n" into one usage-only chunk, which is
	// metered but, spanning two lines, not hidden.
	want := Result{Usage: Usage{InputTokens: 3}, HasUsage: true, Outcome: OutcomeCompleted, Stream: true}
	if !sameResult(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestHiddenChunkWithCR(t *testing.T) {
	usage := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}"
	for _, eol := range []string{"\n", "\r\n", "\r"} {
		in := []byte("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}" + eol + eol + usage + eol + eol + "data: [DONE]" + eol + eol)
		want := []byte("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}" + eol + eol + "data: [DONE]" + eol + eol)
		req := &Request{Format: FormatChat, Stream: true, InjectedUsage: true}
		for how, pieces := range splits(in, 3) {
			got, out := observe(t, req, 200, sseType, pieces)
			if !bytes.Equal(out, want) {
				t.Errorf("%q %s: client got %q", eol, how, out)
			}
			if got.Usage.InputTokens != 3 || got.OutputChars != 1 || got.Outcome != OutcomeCompleted {
				t.Errorf("%q %s: %+v", eol, how, got)
			}
		}
	}
}

func TestHideOnlyWholeEvents(t *testing.T) {
	usage := `{"choices":[],"usage":{"prompt_tokens":3}}`
	for _, in := range []string{
		"id: 7\ndata: " + usage + "\n\n",                               // another field in the event
		"data: {\"choices\":[{}],\"usage\":{\"prompt_tokens\":3}}\n\n", // a content chunk
		"data: {\"choices\":[],\"usage\":null}\n\n",                    // no usage
		"data: {\"usage\":{\"prompt_tokens\":3}}\n\n",                  // no choices
		"data: " + usage, // not complete
	} {
		req := &Request{Format: FormatChat, Stream: true, InjectedUsage: true}
		_, out := observe(t, req, 200, sseType, [][]byte{[]byte(in)})
		if string(out) != in {
			t.Errorf("%q: client got %q", in, out)
		}
	}
}

func TestHideKeepsComments(t *testing.T) {
	in := ": ping\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\n\n: ping\n\n"
	req := &Request{Format: FormatChat, Stream: true, InjectedUsage: true}
	_, out := observe(t, req, 200, sseType, [][]byte{[]byte(in)})
	if want := ": ping\n: ping\n\n"; string(out) != want {
		t.Errorf("client got %q, want %q", out, want)
	}
}

func TestLongLine(t *testing.T) {
	big := bytes.Repeat([]byte("x"), maxLine+1)
	usage := []byte("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\n\n")
	afterUsage := append(append(append([]byte{}, usage...), big...), "\n\ndata: [DONE]\n\n"...)
	for _, tc := range []struct {
		name    string
		in      []byte
		inject  bool
		outcome Outcome
		want    []byte // the client's bytes; nil means the input
	}{
		{"no usage", append(append([]byte("data: "), big...), "\n\ndata: [DONE]\n\n"...), false, OutcomeStreamError, nil},
		{"no usage hiding", append(append([]byte("data: "), big...), "\n\n"...), true, OutcomeStreamError, nil},
		// Usage was seen, so no stream_error; the [DONE] after the break is not seen.
		{"after usage", afterUsage, false, OutcomeCutOff, nil},
		{"after usage hiding", afterUsage, true, OutcomeCutOff, afterUsage[len(usage):]},
		{"partial", append([]byte("data: "), big...), true, OutcomeStreamError, nil},
		{"joined data", bytes.Repeat([]byte("data: "+string(big[:maxLine/2])+"\n"), 3), true, OutcomeStreamError, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &Request{Format: FormatChat, Stream: true, InjectedUsage: tc.inject}
			want := tc.want
			if want == nil {
				want = tc.in
			}
			for _, pieces := range [][][]byte{{tc.in}, chop(tc.in, 4096), chop(tc.in, 100000)} {
				got, out := observe(t, req, 200, sseType, pieces)
				if got.Outcome != tc.outcome {
					t.Errorf("outcome %s, want %s", got.Outcome, tc.outcome)
				}
				if !bytes.Equal(out, want) {
					t.Errorf("client got %d bytes, want %d", len(out), len(want))
				}
			}
		})
	}
}

// chop cuts b into pieces of n bytes.
func chop(b []byte, n int) [][]byte {
	var pieces [][]byte
	for len(b) > n {
		pieces = append(pieces, b[:n])
		b = b[n:]
	}
	return append(pieces, b)
}
