// Package jsonenc appends JSON values to byte slices without reflection,
// for the records the gateway encodes on every request.
package jsonenc

import "encoding/json"

// AppendString appends s as a JSON string, byte for byte as encoding/json
// writes it. Plain ASCII (the usual IDs, models, paths and addresses) is
// copied; anything encoding/json would escape goes through it.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !plain[s[i]] {
			j, _ := json.Marshal(s)
			return append(b, j...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// plain holds the bytes encoding/json writes as they are: printable ASCII
// but the quote, the backslash and the HTML characters <, > and &.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()
