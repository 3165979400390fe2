package caddymodule

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/meter"
)

// TestMeteredPathsMatchLikeCaddy: the handler finds a metered endpoint in
// exactly the spellings Caddy's own path matcher accepts for it, so no
// route that Caddy sends to a provider reaches it unmetered. Each format's
// paths are written as Caddy path patterns: the OpenAI paths under any
// prefix ("/openai/v1/chat/completions"), DeepSeek's without "/v1"
// ("/chat/completions" under any prefix, and the bare root paths).
func TestMeteredPathsMatchLikeCaddy(t *testing.T) {
	endpoints := map[meter.Format]caddyhttp.MatchPath{
		meter.FormatChat:        {"*/chat/completions", "*/chat/completions/"},
		meter.FormatCompletions: {"*/v1/completions", "*/v1/completions/", "/completions", "/completions/"},
		meter.FormatEmbeddings:  {"*/v1/embeddings", "*/v1/embeddings/", "/embeddings", "/embeddings/"},
		meter.FormatResponses:   {"*/v1/responses", "*/v1/responses/", "/responses", "/responses/"},
		meter.FormatMessages:    {"*/v1/messages", "*/v1/messages/", "/messages", "/messages/"},
	}
	for _, m := range endpoints {
		if err := m.Provision(caddy.Context{}); err != nil {
			t.Fatal(err)
		}
	}
	paths := []string{
		"/v1/chat/completions", "/V1/CHAT/COMPLETIONS", "/v1/Chat/Completions/", "//v1//chat///completions",
		"/v1/./chat/completions", "/v1/x/../chat/completions", "/v1/chat/completions/.", "/v1/chat%2Fcompletions",
		"/v1/embeddings", "/V1/Embeddings", "/v1/messages", "/v1/MESSAGES/", "/v1/chat/completion",
		"/v1/chat/completions/x", "/v1/images/generations", "/v1/chat/completions/..",
		// Completions and responses.
		"/v1/completions", "/V1/COMPLETIONS/", "//v1//completions", "/v1/./completions", "/v1/x/../completions",
		"/v1/completions/.", "/v1/completions/x", "/v1/completions/..", "/v1/completion",
		"/v1/responses", "/v1/Responses/", "/v1//responses", "/v1/x/%2E%2E/responses", "/v1/responses%2F",
		"/v1/responses/resp_123", "/v1/responses/resp_123/input_items", "/v1/responses/..", "/v1/response",
		// DeepSeek's paths without /v1, and prefixes.
		"/chat/completions", "/CHAT/Completions/", "//chat//completions", "/./chat/completions", "/x/../chat/completions",
		"/completions", "/Completions/", "/./completions", "/x/../completions", "/completions/..", "/completions/x",
		"/embeddings", "/EMBEDDINGS/", "/responses", "/Responses/", "/messages", "/MESSAGES/", "//messages",
		"/deepseek/chat/completions", "/openai/v1/chat/completions", "/openai/v1/completions", "/openai/V1/Responses",
		"/openai/v1/embeddings", "/anthropic/v1/messages", "/x/completions", "/x/responses", "/x/embeddings",
		"/x/messages", "/v1x/completions", "/v2/responses", "/chatx/completions", "/", "",
	}
	formats := map[meter.Format]int{}
	for _, p := range paths {
		r := httptest.NewRequest("POST", "http://localhost"+p, nil)
		repl := caddy.NewReplacer()
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
		got, _, _ := endpointOf(r)
		formats[got]++
		for f, m := range endpoints {
			caddySays, err := m.MatchWithError(r)
			if err != nil {
				t.Fatal(err)
			}
			if caddySays != (got == f) {
				t.Errorf("%s: Caddy's matcher says %v for %s, the meter reads %s", p, caddySays, f, got)
			}
		}
	}
	// Every format, and paths that are none, were compared.
	for f := range endpoints {
		if formats[f] < 3 {
			t.Errorf("only %d paths of %s", formats[f], f)
		}
	}
	if formats[meter.FormatUnknown] < 10 {
		t.Errorf("only %d unmetered paths", formats[meter.FormatUnknown])
	}
}
