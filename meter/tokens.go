package meter

import (
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/tiktoken-go/tokenizer/codec"
)

// This file counts tokens locally, for the estimate billed when a response
// ends without a usage report. OpenAI models use their own BPE encodings
// (github.com/tiktoken-go/tokenizer: pure Go, the vocabularies are compiled
// into the binary, nothing is fetched at run time). Other models use a
// characters rule.

// Tokenizer names, as returned by TokenizerFor.
const (
	TokenizerO200k  = "o200k_base"
	TokenizerCl100k = "cl100k_base"
	TokenizerChars  = "chars"
)

// TokenizerFor names the way CountTokens counts for model:
//
//   - "o200k_base" for gpt-4o*, gpt-4.1*, gpt-4.5*, gpt-5*, o1*, o3*, o4* and
//     chatgpt-*;
//   - "cl100k_base" for the other gpt-4*, gpt-3.5* and text-embedding-*;
//   - "chars" for everything else (deepseek*, claude*, unknown models): the
//     characters rule of [CountTokens].
//
// The model is matched case-insensitively, after a provider prefix up to
// the last "/" (as in "openai/gpt-4o") and a fine-tune "ft:" prefix are
// removed.
func TokenizerFor(model string) string {
	m := strings.ToLower(model)
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		m = m[i+1:]
	}
	m = strings.TrimPrefix(m, "ft:")
	for _, p := range [...]string{"gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-"} {
		if strings.HasPrefix(m, p) {
			return TokenizerO200k
		}
	}
	for _, p := range [...]string{"gpt-4", "gpt-3.5", "text-embedding-"} {
		if strings.HasPrefix(m, p) {
			return TokenizerCl100k
		}
	}
	return TokenizerChars
}

// CountTokens counts the tokens of text for model (see [TokenizerFor]).
//
// OpenAI models get an exact count in their BPE encoding (text is encoded
// as ordinary text: special-token strings get no special treatment; invalid
// UTF-8 counts as U+FFFD) at about 4–10 MB/s. Each encoding is loaded once,
// on first use (some 25–100 ms; the process grows by about 12 MB for
// o200k_base and 7 MB for cl100k_base), and is then shared: CountTokens is
// safe for concurrent use. The vocabularies add about 9.6 MB to a binary
// that calls it.
//
// Every other model uses DeepSeek's published rule of thumb, ≈0.3 token per
// English character and ≈0.6 per Chinese character:
//
//	ceil(0.3 × non-CJK runes + 0.6 × CJK runes)
//
// where CJK runes are Han, Hiragana, Katakana and Hangul letters, CJK
// symbols and punctuation (U+3000–U+303F) and full-width forms
// (U+FF00–U+FFEF). Claude has no published local tokenizer, so Claude
// models use the same rule; so does DeepSeek itself, for which no verified
// pure-Go tokenizer exists.
func CountTokens(model string, text []byte) int64 {
	if len(text) == 0 {
		return 0
	}
	var enc *encoding
	switch TokenizerFor(model) {
	case TokenizerO200k:
		enc = &o200k
	case TokenizerCl100k:
		enc = &cl100k
	default:
		return charsRule(text)
	}
	c := enc.get()
	n, err := c.Count(string(text))
	if err != nil { // only a regexp timeout, and none is set
		return charsRule(text)
	}
	return int64(n)
}

// encoding is one BPE encoding, loaded on first use.
type encoding struct {
	once  sync.Once
	load  func() *codec.Codec
	codec *codec.Codec
}

var (
	o200k  = encoding{load: codec.NewO200kBase}
	cl100k = encoding{load: codec.NewCl100kBase}
)

func (e *encoding) get() *codec.Codec {
	e.once.Do(func() {
		c := e.load()
		// Invalid UTF-8 becomes U+FFFD before splitting, as in tiktoken.
		c.SetErrorMode(codec.ErrorModeReplace)
		e.codec = c
	})
	return e.codec
}

// charsRule is ceil(0.3 × non-CJK runes + 0.6 × CJK runes); each invalid
// UTF-8 byte counts as one non-CJK rune.
func charsRule(text []byte) int64 {
	var other, cjk int64
	for i := 0; i < len(text); {
		c := text[i]
		if c < utf8.RuneSelf {
			other++
			i++
			continue
		}
		r, n := utf8.DecodeRune(text[i:])
		i += n
		if isCJK(r) {
			cjk++
		} else {
			other++
		}
	}
	return (3*other + 6*cjk + 9) / 10
}

// isCJK reports whether r counts as a Chinese, Japanese or Korean character
// for the characters rule.
func isCJK(r rune) bool {
	switch {
	case r < 0x1100:
		return false
	case r >= 0x3000 && r <= 0x303F, r >= 0xFF00 && r <= 0xFFEF:
		return true
	}
	return unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul)
}
