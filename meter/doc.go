// Package meter reads AI API requests and watches their responses as the
// bytes pass to the client, to learn what a request cost in tokens.
//
// It is pure: no network, no files, no goroutines. A handler parses the
// request body once with [ParseRequest] (which can ask a streaming upstream
// to report usage), then feeds every response write through an [Observer],
// which forwards the bytes at once, hides the usage-only chunk the gateway
// caused, and reports a [Result] at the end. [Bill] then decides what the
// response costs in tokens: the upstream's usage report when there is one,
// else an estimate ([Estimate] counts the tokens locally, [CountTokens],
// from the request body and the text that passed), both bounded by what
// the request could have produced.
//
// Supported shapes are OpenAI chat/completions, completions, embeddings and
// responses, and Anthropic messages, each as a JSON body or an SSE stream.
package meter
