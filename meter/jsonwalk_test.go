package meter

import (
	"bytes"
	"testing"
)

// TestWordScans holds plainEnd and stringRun, which look at 8 bytes at a
// time, to byte-by-byte searches: every length to past plainEnd's
// IndexByte threshold, each byte they stop at in every place, among bytes
// one off from those and bytes with the high bit set (a word's borrow
// must not move the match).
func TestWordScans(t *testing.T) {
	for _, sc := range []struct {
		name string
		scan func([]byte, int) int
		stop []byte
	}{
		{"plainEnd", plainEnd, []byte{'"', '\\'}},
		{"stringRun", stringRun, []byte{'"', '\\', 0x00, 0x1f, '\n'}},
	} {
		naive := func(p []byte, i int) int {
			for ; i < len(p) && bytes.IndexByte(sc.stop, p[i]) < 0; i++ {
			}
			return i
		}
		noise := []byte{'!', '#', '[', ']', ' ', 0x7f, 0x80, 0xff, 0xa2, 0xdc, 'a'}
		for n := 0; n <= 80; n++ {
			for from := 0; from <= min(n, 10); from++ {
				for at := -1; at < n; at++ {
					for _, c := range sc.stop {
						p := make([]byte, n)
						for k := range p {
							p[k] = noise[(k*7+n)%len(noise)]
						}
						if at >= 0 {
							p[at] = c
							if at+3 < n {
								p[at+3] = sc.stop[0] // a later stop
							}
						}
						if got, want := sc.scan(p, from), naive(p, from); got != want {
							t.Fatalf("%s(%q, %d) = %d, want %d", sc.name, p, from, got, want)
						}
					}
				}
			}
		}
	}
}

// TestStringEnd checks the ends of strings with escapes across the word
// and threshold boundaries plainEnd uses.
func TestStringEnd(t *testing.T) {
	for pad := 0; pad < 40; pad++ {
		for _, tc := range []struct {
			body string
			end  int // past the closing quote, from the opening one; -1: none
		}{
			{`"` + spaces(pad) + `"`, pad + 2},
			{`"` + spaces(pad) + `\""`, pad + 4},
			{`"` + spaces(pad) + `\\"`, pad + 4},
			{`"` + spaces(pad) + `\\\"x"`, pad + 7},
			{`"` + spaces(pad) + `\`, -1},
			{`"` + spaces(pad), -1},
			{`"` + spaces(pad) + `\"`, -1},
		} {
			b := []byte("xx" + tc.body)
			want := tc.end
			if want >= 0 {
				want += 2
			}
			if got := stringEnd(b, 2); got != want {
				t.Errorf("stringEnd(%q) = %d, want %d", b, got, want)
			}
		}
	}
}

func spaces(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return string(b)
}
