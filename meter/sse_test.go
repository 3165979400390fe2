package meter

import (
	"bytes"
	"io"
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
		[]byte("\ndata: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":0}}\r"),
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

// TestLongLine: a line or event data over the limit is forwarded untouched
// and skipped; the meter keeps framing and finds the usage and the
// terminator after it, holding no more than the limit meanwhile.
func TestLongLine(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 3*maxLine+5)
	long := func(prefix string) []byte { return append([]byte(prefix), big...) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	content := []byte("data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n\n")
	usage := []byte("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n")
	done := []byte("data: [DONE]\n\n")
	reported := Usage{InputTokens: 3, OutputTokens: 2}
	bigChars := int64(len(big))
	for _, tc := range []struct {
		name   string
		in     []byte
		inject bool
		want   Result
		hidden bool // the client gets in without the usage chunk
	}{
		{"data line", cat(content, long("data: "), []byte("\n\n"), usage, done), false,
			Result{Usage: reported, HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 2 + bigChars}, false},
		{"data line hiding", cat(content, long("data: "), []byte("\n\n"), usage, done), true,
			Result{Usage: reported, HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 2 + bigChars}, true},
		{"CRLF", lineEndings(cat(content, long("data:"), []byte("\n\n"), usage, done), "\r\n"), true,
			Result{Usage: reported, HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 2 + bigChars}, true},
		{"CR", lineEndings(cat(content, long("data:"), []byte("\n\n"), usage, done), "\r"), true,
			Result{Usage: reported, HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 2 + bigChars}, true},
		{"comment", cat(long(":"), []byte("\n"), content, usage, done), true,
			Result{Usage: reported, HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 2}, true},
		{"other field", cat(long("id: "), []byte("\n\n"), usage, done), true,
			Result{Usage: reported, HasUsage: true, Outcome: OutcomeCompleted}, true},
		// The long event name is cut as any, and the data of its event decoded.
		{"event name", cat(long("event: "), []byte("\n"), content[:len(content)-1], []byte("\n"), usage, done), true,
			Result{Usage: reported, HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 2}, true},
		// A long line in the event of the usage chunk: the event is skipped,
		// so its usage is not seen and it is not hidden.
		{"in the usage event", cat(long("data: "), []byte("\n"), usage, done), true,
			Result{Outcome: OutcomeCompleted, OutputChars: bigChars + 1 + int64(len(usage)-len("data: \n\n"))}, false},
		{"usage before", cat(usage, long("data: "), []byte("\n\n"), done), true,
			Result{Usage: reported, HasUsage: true, Outcome: OutcomeCompleted, OutputChars: bigChars}, true},
		{"joined data", cat(bytes.Repeat([]byte("data: "+string(big[:maxLine/2])+"\n"), 3), []byte("\n"), usage, done), true,
			Result{Usage: reported, HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 3*maxLine/2 + 2}, true},
		// Cut inside the long line: what passed counts.
		{"cut", cat(content, long("data: ")), true, Result{Outcome: OutcomeCutOff, OutputChars: 2 + bigChars}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &Request{Format: FormatChat, Stream: true, InjectedUsage: tc.inject}
			want := tc.in
			if tc.hidden {
				want = bytes.Replace(tc.in, usage, nil, 1)
				if !bytes.Contains(tc.in, usage) { // other line endings
					want = tc.in
					for _, eol := range []string{"\r\n", "\r"} {
						want = bytes.Replace(want, lineEndings(usage, eol), nil, 1)
					}
				}
			}
			tc.want.Stream = true
			for _, pieces := range [][][]byte{{tc.in}, chop(tc.in, 4096), chop(tc.in, 100000), chop(tc.in, maxLine+3)} {
				o := NewObserver(req)
				o.Start(200, sseType)
				var out bytes.Buffer
				fed := 0
				for _, p := range pieces {
					if err := o.Feed(&out, p); err != nil {
						t.Fatal(err)
					}
					fed += len(p)
					if len(o.line) > maxLine || len(o.data) > maxLine {
						t.Fatalf("buffers over their bound: line %d data %d", len(o.line), len(o.data))
					}
					// Bytes are held back only while they may belong to the
					// hidden chunk: never more than a line of the limit.
					if held := fed - out.Len(); held > maxLine+len(usage) {
						t.Fatalf("%d bytes held back", held)
					}
				}
				_ = o.Close(&out)
				if got := o.Result(); !sameResult(got, tc.want) {
					t.Errorf("%d pieces: result\n got %+v\nwant %+v", len(pieces), got, tc.want)
				}
				if !bytes.Equal(out.Bytes(), want) {
					t.Errorf("%d pieces: client got %d bytes, want %d", len(pieces), out.Len(), len(want))
				}
			}
		})
	}
}

// TestLongLineAllocs: skipping a long line costs no allocation per Feed,
// and nothing of it is kept.
func TestLongLineAllocs(t *testing.T) {
	chunk := bytes.Repeat([]byte("x"), 4096)
	for _, inject := range []bool{false, true} {
		o := NewObserver(&Request{Format: FormatChat, Stream: true, InjectedUsage: inject})
		o.Start(200, sseType)
		_ = o.Feed(io.Discard, []byte("data: "))
		for range maxLine/len(chunk) + 1 {
			_ = o.Feed(io.Discard, chunk)
		}
		if !o.skip || len(o.line) != 0 {
			t.Fatalf("inject %v: not skipping: skip %v, line %d", inject, o.skip, len(o.line))
		}
		if n := testing.AllocsPerRun(100, func() { _ = o.Feed(io.Discard, chunk) }); n != 0 {
			t.Errorf("inject %v: %v allocations per Feed", inject, n)
		}
	}
}

// TestLongJSONBody: a JSON body of any size is followed to its top-level
// usage, after a huge, escaped and deeply nested "choices".
func TestLongJSONBody(t *testing.T) {
	text := bytes.Repeat([]byte(`ab\"\u00e9\\`), maxLine) // 5 characters each
	body := []byte(`{"choices":[{"message":{"content":"` + string(text) + `"},"x":` +
		string(bytes.Repeat([]byte(`{"a":[`), 200)) + `"}]"` + string(bytes.Repeat([]byte(`]}`), 200)) +
		`}],"usage":{"prompt_tokens":7,"completion_tokens":9}}`)
	want := Result{Usage: Usage{InputTokens: 7, OutputTokens: 9}, HasUsage: true, Outcome: OutcomeCompleted, OutputChars: 5 * maxLine}
	for _, pieces := range [][][]byte{{body}, chop(body, 4096), chop(body, 77777)} {
		got, out := observe(t, &Request{Format: FormatChat}, 200, "application/json", pieces)
		if !sameResult(got, want) {
			t.Errorf("%d pieces: got %+v, want %+v", len(pieces), got, want)
		}
		if !bytes.Equal(out, body) {
			t.Errorf("%d pieces: client got %d bytes", len(pieces), len(out))
		}
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
