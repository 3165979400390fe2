package meter

import (
	"errors"
	"strconv"
)

// Request is what the gateway needs from a request body.
type Request struct {
	// Format is the API shape of the endpoint.
	Format Format
	// Model is the "model" string of the body.
	Model string
	// Stream is true when the body asks for an SSE stream ("stream": true).
	Stream bool
	// MaxOutputTokens is the output limit the upstream of Format honours:
	// the larger of max_completion_tokens and max_tokens for chat,
	// max_tokens for completions and messages, max_output_tokens for
	// responses (the largest of the three for FormatUnknown, none for
	// embeddings); 0 if it is not set. A limit the format does not honour
	// is checked but never counted, so it cannot shrink a hold.
	MaxOutputTokens int64
	// ClientWantsUsage is true when the client itself set
	// stream_options.include_usage to true (chat/completions).
	ClientWantsUsage bool
	// InjectedUsage is true when Body was rewritten to ask the upstream for
	// stream usage.
	InjectedUsage bool
	// Choices is how many completions the upstream can generate, each up to
	// MaxOutputTokens, at least 1: for chat and completions the larger of n
	// and best_of (best_of candidates are generated and billed, n of them
	// returned; the upstream requires best_of >= n, and taking the larger
	// also covers one that ignores best_of), times, for completions, the
	// number of prompts (see promptCount); 1 for the other formats. Hold
	// Choices × the output limit.
	Choices int64
	// MediaParts counts the image, audio, video and file input parts (see
	// [MediaPartTokens]), which cost tokens the body's length does not show.
	MediaParts int64
	// InputEstimate is a conservative estimate of the input tokens, used for
	// the hold: ceil(len(body)/2), at least 1, plus MediaPartTokens per
	// media part.
	InputEstimate int64
	// Body is the body to send upstream: the original slice when unchanged.
	Body []byte

	// modelAt and modelLen locate the raw "model" value in Body.
	modelAt, modelLen int
	// reach is what the body's members let the upstream read besides the
	// body (see beyondBody), plus one: found by ParseRequest's walk, so that
	// admission does not walk the body again. Zero: not known.
	reach int
}

// Errors from ParseRequest. A refused field is a *FieldError.
var (
	// ErrInvalidJSON means the body is not valid JSON or not an object.
	ErrInvalidJSON = errors.New("request body is not a JSON object")
	// ErrMissingModel means "model" is absent, null, empty or not a string.
	ErrMissingModel = errors.New("request body has no \"model\" string")
)

// FieldError is a top-level field of a request body (or a member of
// stream_options) that ParseRequest refuses: given twice, given under a key
// that differs from its name only in letter case (a case-insensitive
// decoder upstream could read either), of the wrong JSON type or out of
// range, or asking for something the upstream prices other than by plain
// tokens. Answer it as a 400 invalid_request_error with param Field.
type FieldError struct {
	// Field is the field's documented name, e.g. "max_tokens" or
	// "stream_options.include_usage".
	Field string
	// Reason says what is wrong, e.g. "given twice".
	Reason string
}

// Error returns `invalid "<field>": <reason>`.
func (e *FieldError) Error() string {
	return "invalid " + strconv.Quote(e.Field) + ": " + e.Reason
}

// Bounds of the integer fields.
const (
	// MaxOutputLimit is the largest output limit (max_tokens,
	// max_completion_tokens, max_output_tokens) accepted: 2^31-1, so that
	// an upstream reading it into an int32 reads the same number.
	MaxOutputLimit = 1<<31 - 1
	// MaxChoices is the largest n and best_of accepted.
	MaxChoices = 128
	// MaxPrompts is the most prompts a completions request's prompt array
	// may hold: each gets n (best_of) completions of its own.
	MaxPrompts = 2048
)

// field names a top-level member that ParseRequest reads or guards.
type field uint8

// The guarded fields. Each may appear at most once, under its exact name.
// Besides the billing fields, the ones the input estimate and the media
// count read (messages, input, prompt, ...) are guarded too, so the hold
// sees what the upstream sees.
const (
	fModel field = iota
	fStream
	fStreamOptions
	fMaxTokens
	fMaxCompletionTokens
	fMaxOutputTokens
	fN
	fBestOf
	fServiceTier
	fModalities
	fAudio
	fWebSearchOptions
	fBackground
	fTools
	fMCPServers
	fMessages
	fInput
	fPrompt
	fSuffix
	fSystem
	fInstructions
	fFunctions
	fSpeed
	fInferenceGeo
	numFields
)

var fieldNames = [numFields]string{
	"model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "max_output_tokens",
	"n", "best_of", "service_tier", "modalities", "audio", "web_search_options", "background",
	"tools", "mcp_servers", "messages", "input", "prompt", "suffix", "system", "instructions", "functions",
	"speed", "inference_geo",
}

// lookupField maps an exact key to its field.
func lookupField(k []byte) (field, bool) {
	switch string(k) {
	case "model":
		return fModel, true
	case "stream":
		return fStream, true
	case "stream_options":
		return fStreamOptions, true
	case "max_tokens":
		return fMaxTokens, true
	case "max_completion_tokens":
		return fMaxCompletionTokens, true
	case "max_output_tokens":
		return fMaxOutputTokens, true
	case "n":
		return fN, true
	case "best_of":
		return fBestOf, true
	case "service_tier":
		return fServiceTier, true
	case "modalities":
		return fModalities, true
	case "audio":
		return fAudio, true
	case "web_search_options":
		return fWebSearchOptions, true
	case "background":
		return fBackground, true
	case "tools":
		return fTools, true
	case "mcp_servers":
		return fMCPServers, true
	case "messages":
		return fMessages, true
	case "input":
		return fInput, true
	case "prompt":
		return fPrompt, true
	case "suffix":
		return fSuffix, true
	case "system":
		return fSystem, true
	case "instructions":
		return fInstructions, true
	case "speed":
		return fSpeed, true
	case "inference_geo":
		return fInferenceGeo, true
	case "functions":
		return fFunctions, true
	}
	return 0, false
}

// injectedOptions is inserted right after the opening brace of a body
// without stream_options.
const injectedOptions = `"stream_options":{"include_usage":true},`

// ParseRequest reads what the gateway needs from a request body.
//
// One reading: the gateway and the upstream must never read one body two
// ways, whether the upstream's decoder takes the last of duplicate keys,
// the first, or matches keys regardless of letter case (Go's encoding/json
// does, "ſ" and the Kelvin sign included), or coerces "true" or "100" to a
// bool or a number (pydantic does). So these top-level fields are refused
// with a *FieldError when they appear twice (after unescaping the key),
// under a key that differs from the name only in letter case, or with the
// wrong JSON type:
//
//   - model: a non-empty string (absent, null, empty or not a string is
//     ErrMissingModel);
//   - stream: true, false or null; stream_options: an object or null, whose
//     include_usage is true, false or null (guarded the same way);
//   - max_tokens, max_completion_tokens, max_output_tokens: null or an
//     integer from 0 to MaxOutputLimit, written with digits only; n and
//     best_of: null or an integer from 1 to MaxChoices;
//   - the fields that change the price (below), and messages, input,
//     prompt, suffix, system, instructions, tools and functions, which the
//     estimates read (any value).
//
// Nothing below the top level is restricted, except include_usage and the
// "type" of tools.
//
// Plain tokens only: a request the upstream would bill other than by
// tokens at the model's price is refused with a *FieldError: service_tier
// other than null, "auto" or "default" ("standard_only" too for messages);
// for chat, modalities with "audio", a non-null audio or
// web_search_options; for responses, background true or a tool whose type
// is not "function" or "custom"; for messages, a non-empty mcp_servers or a
// tool whose type is not absent, null, "custom", or one of the client tool
// families bash_*, text_editor_*, computer_* and memory_* (server tools
// such as web_search, web_fetch and code_execution are billed per use).
//
// For FormatChat and FormatCompletions with "stream": true, when injectUsage
// is set and the client does not already ask for usage, it rewrites the body
// so that stream_options.include_usage is true, keeping the client's other
// stream_options fields and every other byte of the body. Other requests are
// never rewritten and Body is body itself. Embeddings never stream; Messages
// and Responses report stream usage by themselves.
//
// Errors: ErrInvalidJSON when body is not a JSON object, ErrMissingModel,
// or a *FieldError.
func ParseRequest(f Format, body []byte, injectUsage bool) (*Request, error) {
	if _, ok := members(body); !ok || !validJSON(body) {
		return nil, ErrInvalidJSON
	}
	var vals [numFields][]byte
	media, optsStart, reach, err := readFields(f, body, &vals)
	if err != nil {
		return nil, err
	}
	modelAt := offsetIn(body, vals[fModel])

	model, err := readModel(vals[fModel])
	if err != nil {
		return nil, err
	}
	r := &Request{Format: f, Model: model, Body: body, Choices: 1, MediaParts: media,
		modelAt: modelAt, modelLen: len(vals[fModel]), reach: reach + 1}
	var ok bool
	if r.Stream, ok = readBool(vals[fStream]); !ok {
		return nil, &FieldError{Field: "stream", Reason: "must be true, false or null"}
	}
	if r.ClientWantsUsage, err = readStreamOptions(vals[fStreamOptions]); err != nil {
		return nil, err
	}
	var limits [3]int64
	for i, fd := range [3]field{fMaxTokens, fMaxCompletionTokens, fMaxOutputTokens} {
		if limits[i], ok = readInt(vals[fd], 0, MaxOutputLimit); !ok {
			return nil, &FieldError{Field: fieldNames[fd], Reason: "must be an integer from 0 to " + strconv.Itoa(MaxOutputLimit) + ", or null"}
		}
	}
	var choices [2]int64
	for i, fd := range [2]field{fN, fBestOf} {
		if choices[i], ok = readInt(vals[fd], 1, MaxChoices); !ok {
			return nil, &FieldError{Field: fieldNames[fd], Reason: "must be an integer from 1 to " + strconv.Itoa(MaxChoices) + ", or null"}
		}
	}
	if err := checkPricing(f, &vals); err != nil {
		return nil, err
	}
	if f == FormatMessages {
		if err := checkCacheTTL(body); err != nil {
			return nil, err
		}
	}
	if media > 0 && (f == FormatChat || f == FormatResponses) {
		in := fMessages
		if f == FormatResponses {
			in = fInput
		}
		if countAudio(vals[in]) > 0 {
			return nil, &FieldError{Field: fieldNames[in], Reason: "audio input is priced per audio token and is not supported"}
		}
	}

	maxTokens, maxCompletion, maxOutput := limits[0], limits[1], limits[2]
	switch f {
	case FormatChat:
		r.MaxOutputTokens = max(maxTokens, maxCompletion)
		r.Choices = max(1, choices[0], choices[1])
	case FormatCompletions:
		r.MaxOutputTokens = maxTokens
		prompts, ok := promptCount(vals[fPrompt])
		if !ok {
			return nil, &FieldError{Field: "prompt", Reason: "holds more than " + strconv.Itoa(MaxPrompts) + " prompts"}
		}
		r.Choices = prompts * max(1, choices[0], choices[1])
	case FormatResponses:
		r.MaxOutputTokens = maxOutput
	case FormatMessages:
		r.MaxOutputTokens = maxTokens
	case FormatEmbeddings:
	default:
		r.MaxOutputTokens = max(maxTokens, maxCompletion, maxOutput)
	}
	r.InputEstimate = min(max(1, (int64(len(body))+1)/2)+r.MediaParts*MediaPartTokens, maxCount)

	switch f {
	case FormatChat, FormatCompletions:
	case FormatEmbeddings:
		r.Stream, r.ClientWantsUsage = false, false
		return r, nil
	default:
		// Only chat and completions take include_usage; the other
		// formats report usage on their own.
		r.ClientWantsUsage = false
		return r, nil
	}
	if !r.Stream || !injectUsage || r.ClientWantsUsage {
		return r, nil
	}
	r.InjectedUsage = true
	if optsStart < 0 {
		open := skipWS(body, 0) + 1
		out := make([]byte, 0, len(body)+len(injectedOptions))
		out = append(out, body[:open]...)
		out = append(out, injectedOptions...)
		r.Body = append(out, body[open:]...)
		r.modelAt += len(injectedOptions) // the model comes after the brace
		return r, nil
	}
	streamOpts := vals[fStreamOptions]
	patched := withIncludeUsage(streamOpts)
	out := make([]byte, 0, len(body)-len(streamOpts)+len(patched))
	out = append(out, body[:optsStart]...)
	out = append(out, patched...)
	r.Body = append(out, body[optsStart+len(streamOpts):]...)
	if r.modelAt > optsStart {
		r.modelAt += len(patched) - len(streamOpts)
	}
	return r, nil
}

// offsetIn is where sub, a subslice of body, starts in body.
func offsetIn(body, sub []byte) int { return cap(body) - cap(sub) }

// Rename makes the request ask the upstream for model name instead of the
// one the client named (an alias's provider model): the raw "model" value
// in Body is replaced by name as a JSON string, every other byte is kept,
// and Model becomes name. The body is still read once: the field is
// replaced where ParseRequest found it, and it was refused there if it
// appeared twice or in another letter case. Body is copied, never changed
// in place. name must be a non-empty model name; Rename to the same name
// does nothing.
func (r *Request) Rename(name string) {
	if name == r.Model || r.modelLen == 0 {
		return
	}
	end := r.modelAt + r.modelLen
	out := make([]byte, 0, len(r.Body)-r.modelLen+len(name)+2)
	out = append(out, r.Body[:r.modelAt]...)
	out = appendJSONString(out, name)
	r.modelLen = len(out) - r.modelAt
	r.Body = append(out, r.Body[end:]...)
	r.Model = name
}

// appendJSONString appends s as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// readFields walks the members of the object body (valid JSON) like
// objIter, keeping the value of each guarded field in vals. It counts the
// media parts of body's format while it finds the end of their field's
// value, so the body is read once besides its validation. optsStart is the
// offset of stream_options' value, -1 if absent. A field given twice or in
// another letter case is a *FieldError.
func readFields(f Format, body []byte, vals *[numFields][]byte) (media int64, optsStart, reach int, err error) {
	mediaIn := numFields // messages (chat, messages) or input (responses)
	switch f {
	case FormatChat, FormatMessages:
		mediaIn = fMessages
	case FormatResponses:
		mediaIn = fInput
	}
	optsStart = -1
	for i := skipWS(body, 0) + 1; ; {
		if i = skipWS(body, i); i < len(body) && body[i] == ',' {
			i = skipWS(body, i+1)
		}
		if i >= len(body) || body[i] != '"' {
			return media, optsStart, reach, nil
		}
		ke := stringEnd(body, i)
		if ke < 0 {
			return 0, 0, 0, ErrInvalidJSON
		}
		k := body[i+1 : ke-1]
		i = skipWS(body, skipWS(body, ke)+1) // past the colon
		var fd field
		var ok bool
		if plainKey(k) {
			fd, ok = lookupField(k)
		} else if fd, ok, err = slowField(k); err != nil {
			return 0, 0, 0, err
		}
		start := i
		if ok && fd == mediaIn {
			i, media = mediaWalk(body, i, 0)
		} else {
			i = valueEnd(body, i)
		}
		if i >= 0 {
			reach = max(reach, memberReach(f, k, body[start:i]))
		}
		switch {
		case i < 0:
			return 0, 0, 0, ErrInvalidJSON
		case !ok:
			continue
		case vals[fd] != nil:
			return 0, 0, 0, &FieldError{Field: fieldNames[fd], Reason: "given twice"}
		}
		vals[fd] = body[start:i]
		if fd == fStreamOptions {
			optsStart = start
		}
	}
}
