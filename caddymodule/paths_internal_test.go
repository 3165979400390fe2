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
// route that Caddy sends to a provider reaches it unmetered.
func TestMeteredPathsMatchLikeCaddy(t *testing.T) {
	endpoints := map[meter.Format]caddyhttp.MatchPath{
		meter.FormatChat:       {"/v1/chat/completions", "/v1/chat/completions/"},
		meter.FormatEmbeddings: {"/v1/embeddings", "/v1/embeddings/"},
		meter.FormatMessages:   {"/v1/messages", "/v1/messages/"},
	}
	for _, m := range endpoints {
		if err := m.Provision(caddy.Context{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{
		"/v1/chat/completions", "/V1/CHAT/COMPLETIONS", "/v1/Chat/Completions/", "//v1//chat///completions",
		"/v1/./chat/completions", "/v1/x/../chat/completions", "/v1/chat/completions/.", "/v1/chat%2Fcompletions",
		"/v1/embeddings", "/V1/Embeddings", "/v1/messages", "/v1/MESSAGES/", "/v1/chat/completion",
		"/v1/chat/completions/x", "/v1/images/generations", "/v1/chat/completions/..",
	} {
		r := httptest.NewRequest("POST", "http://localhost"+p, nil)
		repl := caddy.NewReplacer()
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
		got, _, _ := endpointOf(r)
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
}
