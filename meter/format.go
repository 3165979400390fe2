package meter

import "strings"

// Format is the API shape of an endpoint.
type Format uint8

// Formats of the metered endpoints.
const (
	FormatUnknown     Format = iota // not metered (e.g. GET /v1/models)
	FormatChat                      // /v1/chat/completions
	FormatCompletions               // /v1/completions
	FormatEmbeddings                // /v1/embeddings
	FormatResponses                 // /v1/responses
	FormatMessages                  // /v1/messages (Anthropic)
)

// String returns the format's name as used in logs and usage records
// ("chat.completions", "completions", "embeddings", "responses", "messages"),
// or "" for FormatUnknown.
func (f Format) String() string {
	switch f {
	case FormatChat:
		return "chat.completions"
	case FormatCompletions:
		return "completions"
	case FormatEmbeddings:
		return "embeddings"
	case FormatResponses:
		return "responses"
	case FormatMessages:
		return "messages"
	}
	return ""
}

// FormatForPath maps a request path to its format by suffix
// ("/v1/chat/completions", also with a prefix such as
// "/openai/v1/chat/completions"; one trailing slash is ignored). DeepSeek
// also serves its API without "/v1", so "/chat/completions" under any
// prefix and the bare root paths ("/completions", "/embeddings",
// "/responses", "/messages") are metered too. Any other path is
// FormatUnknown. Callers should clean the path first.
func FormatForPath(path string) Format {
	path = strings.TrimSuffix(path, "/")
	switch path {
	case "/completions":
		return FormatCompletions
	case "/embeddings":
		return FormatEmbeddings
	case "/responses":
		return FormatResponses
	case "/messages":
		return FormatMessages
	}
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		return FormatChat
	case strings.HasSuffix(path, "/v1/completions"):
		return FormatCompletions
	case strings.HasSuffix(path, "/v1/embeddings"):
		return FormatEmbeddings
	case strings.HasSuffix(path, "/v1/responses"):
		return FormatResponses
	case strings.HasSuffix(path, "/v1/messages"):
		return FormatMessages
	}
	return FormatUnknown
}
