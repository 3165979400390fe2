package meter

// This file finds the image, audio, video and file parts of a request:
// they cost tokens the body's length does not show.

// MediaPartTokens is the input tokens one image, audio, video or file part
// is taken to cost, for holds ([Request].InputEstimate) and for estimates of
// requests that end without a usage report. An image costs at most: about
// 1,600 tokens on Anthropic models (width × height / 750, images scaled
// to about 1.15 megapixels); 85 + 170 per 512-pixel tile on gpt-4o, at
// most 8 tiles once scaled, so 1,445; 1,536 32-pixel patches times the
// model's multiplier on the patch-priced OpenAI models, 3,779 at most
// (gpt-4.1-nano's 2.46). 4,000 covers them all. It does not bound
// gpt-4o-mini's images (2,833 + 5,667 per tile, tokens inflated so that an
// image costs the same money as on gpt-4o), nor multi-page documents, long
// audio or video, which are billed by their length: the upstream's usage
// report bills those, and the hold and the estimate stay low for them.
const MediaPartTokens = 4000

// mediaTypes are the "type" values of media parts and blocks: chat
// (image_url, input_audio, file; audio_url and video_url on some
// OpenAI-compatible servers), responses (input_image, input_file,
// input_audio, and the computer_screenshot of a computer call's output)
// and Anthropic (image, document).
var mediaTypes = [...]string{"image_url", "input_audio", "audio", "audio_url", "file", "input_file",
	"input_image", "image", "document", "video", "video_url", "computer_screenshot"}

// maxMediaDepth bounds how deep countMedia looks: a message's content
// parts are at depth 3, an Anthropic tool result's blocks at 5.
const maxMediaDepth = 10

// countMedia counts the media parts in v (a messages or input value): the
// objects whose "type" names a media type, looking into arrays and into
// the "content" and "output" of objects (message content, tool results,
// call outputs), plus one per chat message that carries an "audio" object
// (a reference to earlier audio output, read again as input). Keys are
// matched regardless of letter case, so a case-insensitive upstream cannot
// see a part this misses. Values nested deeper than maxMediaDepth are not
// looked into.
func countMedia(v []byte, depth int) int64 {
	if len(v) == 0 {
		return 0
	}
	end, n := mediaWalk(v, 0, depth)
	if end < 0 {
		return 0
	}
	return n
}

// audioTypes are the "type" values of audio input parts.
var audioTypes = [...]string{"input_audio", "audio", "audio_url"}

// countAudio counts the audio input parts in v (a messages or input value)
// as countMedia counts media parts: typed audio parts, and chat messages
// carrying an "audio" object.
func countAudio(v []byte) int64 {
	if len(v) == 0 {
		return 0
	}
	end, n := mediaWalkOf(v, 0, 0, audioTypes[:])
	if end < 0 {
		return 0
	}
	return n
}

// mediaWalk is countMedia over the value that starts at b[i]: it returns
// the index just past the value (-1 if it is not valid JSON) and the media
// parts in it. It reads the value once, so ParseRequest can count the parts
// while it walks the body.
func mediaWalk(b []byte, i, depth int) (end int, n int64) {
	return mediaWalkOf(b, i, depth, mediaTypes[:])
}

// mediaWalkOf is mediaWalk counting the parts whose "type" is one of
// types (and the chat "audio" references).
func mediaWalkOf(b []byte, i, depth int, types []string) (end int, n int64) {
	if i >= len(b) {
		return -1, 0
	}
	if depth > maxMediaDepth {
		return valueEnd(b, i), 0
	}
	switch b[i] {
	case '[':
		if i = skipWS(b, i+1); i < len(b) && b[i] == ']' {
			return i + 1, 0
		}
		for {
			e, c := mediaWalkOf(b, i, depth+1, types)
			if e < 0 {
				return -1, 0
			}
			n += c
			next, more := afterValue(b, e, ']')
			switch {
			case next < 0:
				return -1, 0
			case !more:
				return next, n
			}
			i = next
		}
	case '{':
		media := false
		if i = skipWS(b, i+1); i < len(b) && b[i] == '}' {
			return i + 1, 0
		}
		for {
			k, vi := memberValue(b, i)
			if vi < 0 {
				return -1, 0
			}
			i = vi
			var e int
			if key := mediaKey(k); key == keyNested {
				var c int64
				e, c = mediaWalkOf(b, i, depth+1, types)
				n += c
			} else if e = valueEnd(b, i); e > i && key != keyOther {
				if key == keyType {
					media = media || isTypeIn(b[i:e], types)
				} else {
					media = media || b[i] == '{' // an audio reference
				}
			}
			if e < 0 {
				return -1, 0
			}
			next, more := afterValue(b, e, '}')
			switch {
			case next < 0:
				return -1, 0
			case !more:
				if media {
					n++
				}
				return next, n
			}
			i = next
		}
	}
	return valueEnd(b, i), 0
}

// The keys mediaWalk looks at.
const (
	keyOther  = iota
	keyNested // content, output: looked into
	keyType   // type: a media type?
	keyAudio  // audio: an object is a media part
)

// mediaKey classifies the raw key k, matched in any letter case.
func mediaKey(k []byte) int {
	if plainKey(k) {
		switch string(k) {
		case "content", "output":
			return keyNested
		case "type":
			return keyType
		case "audio":
			return keyAudio
		}
		return keyOther
	}
	k = unescapeKey(k)
	switch {
	case foldsTo(k, "content"), foldsTo(k, "output"):
		return keyNested
	case foldsTo(k, "type"):
		return keyType
	case foldsTo(k, "audio"):
		return keyAudio
	}
	return keyOther
}

// isMediaType reports whether v is a string naming a media part type (in
// any letter case).
func isMediaType(v []byte) bool { return isTypeIn(v, mediaTypes[:]) }

// isTypeIn reports whether v is a string naming one of types (in any
// letter case).
func isTypeIn(v []byte, types []string) bool {
	if len(v) < 2 || v[0] != '"' {
		return false
	}
	s := v[1 : len(v)-1]
	if plainKey(s) {
		for _, name := range types {
			if string(s) == name {
				return true
			}
		}
		return false
	}
	s = unescapeKey(s)
	for _, name := range types {
		if foldsTo(s, name) {
			return true
		}
	}
	return false
}
