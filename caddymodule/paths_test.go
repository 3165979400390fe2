package caddymodule_test

// Paths under the handler: deny by default, the model list, passthrough.

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func TestUnmeteredPathsAreRefused(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/images/generations"},
		{"POST", "/v1/audio/speech"},
		{"POST", "/v1/audio/transcriptions"},
		{"POST", "/v1/batches"},
		{"GET", "/v1/batches"},
		{"GET", "/v1/files"},
		{"POST", "/v1/files"},
		{"DELETE", "/v1/files/file-abc"},
		{"GET", "/v1/responses/resp_123"},
		{"DELETE", "/v1/responses/resp_123"},
		{"GET", "/v1/chat/completions"},
		{"GET", "/v1/chat/completions/chatcmpl-1"},
		{"POST", "/v1/chat/completions/chatcmpl-1"},
		{"POST", "/v1/moderations"},
		{"POST", "/v1/chat/completions/.."},
		{"POST", "/pass/v1/images/generations"},
	} {
		tag := "refused-" + c.method + c.path
		req, _ := http.NewRequest(c.method, gatewayURL+c.path, strings.NewReader(`{"model":"test-model","prompt":"a cat"}`))
		req.Header.Set("Authorization", "Bearer "+k.Key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Test-Tag", tag)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		apiErr(t, resp, body, http.StatusNotFound, "unsupported_endpoint")
		if n := hits(tag); n != 0 {
			t.Fatalf("%s %s reached the upstream %d times", c.method, c.path, n)
		}
	}
	// No key: 401 first, as everywhere.
	resp, body := post(t, "/v1/images/generations", "", `{}`)
	apiErr(t, resp, body, http.StatusUnauthorized, "missing_api_key")

	// Metered paths in any spelling Caddy's path matcher accepts are
	// metered (and billed).
	spellings := []string{"/v1/CHAT/completions", "/V1/Chat/Completions", "/v1//chat/completions", "/v1/./chat/completions/"}
	for _, p := range spellings {
		resp, body := post(t, p, k.Key, `{"model":"test-model","messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
	for _, r := range waitUsage(t, u.ID, len(spellings)) {
		if mustNanos(t, r.Cost) <= 0 || r.Estimated || r.OutputTokens != 5 {
			t.Fatalf("a metered path in another spelling was not billed exactly: %+v", r)
		}
	}
}

func TestModelsAnsweredByGateway(t *testing.T) {
	gateway(t)
	_, k := newAccount(t, "", "")
	_, limited := newAccount(t, "", `{"user":"$USER","models":["test-model","pre-x"]}`)
	ctx := context.Background()
	list := func(c openai.Client) []string {
		t.Helper()
		page, err := c.Models.List(ctx, option.WithHeader("X-Test-Tag", "models-list"))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range page.Data {
			if m.Object != "model" {
				t.Fatalf("model object %+v", m)
			}
			ids = append(ids, m.ID)
		}
		return ids
	}
	if got, want := list(client(k.Key)), []string{"claude-test", "other-model", "test-model"}; !slices.Equal(got, want) {
		t.Fatalf("models for an unlimited key: %v, want %v (wildcard prices are not listed)", got, want)
	}
	if got, want := list(client(limited.Key)), []string{"pre-x", "test-model"}; !slices.Equal(got, want) {
		t.Fatalf("models for a limited key: %v, want %v", got, want)
	}
	routeLimited := client(k.Key, option.WithBaseURL(gatewayURL+"/limited/v1/"))
	if got, want := list(routeLimited), []string{"test-model"}; !slices.Equal(got, want) {
		t.Fatalf("models on a route limited to test-model: %v, want %v", got, want)
	}
	lc := client(limited.Key)
	m, err := lc.Models.Get(ctx, "pre-x")
	if err != nil || m.ID != "pre-x" {
		t.Fatalf("get pre-x: %+v, %v", m, err)
	}
	_, err = lc.Models.Get(ctx, "other-model")
	var apiE *openai.Error
	if !errors.As(err, &apiE) || apiE.StatusCode != http.StatusNotFound || apiE.Code != "model_not_found" {
		t.Fatalf("get a model the key may not use: %v", err)
	}
	if n := hits("models-list"); n != 0 {
		t.Fatalf("the model list reached the upstream %d times", n)
	}
	req, _ := http.NewRequest("GET", gatewayURL+"/v1/models", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("models without a key: %d", resp.StatusCode)
	}
}

func TestPassthroughIsAuthenticatedAndUnmetered(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	req, _ := http.NewRequest("GET", gatewayURL+"/pass/v1/files", nil)
	req.Header.Set("X-Test-Tag", "passthrough-files")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || hits("passthrough-files") != 0 {
		t.Fatalf("passthrough without a key: %d, %d upstream hits", resp.StatusCode, hits("passthrough-files"))
	}
	for _, p := range []string{"/pass/v1/files", "/pass/V1/FILES/file-abc"} {
		req, _ = http.NewRequest("GET", gatewayURL+p, nil)
		req.Header.Set("X-Test-Tag", "passthrough-files")
		req.Header.Set("x-api-key", k.Key)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		last, _ := env.mock.LastRequest()
		if last.Header.Get("X-Api-Key") != "" || last.Header.Get("Authorization") != "" {
			t.Fatal("the client's key reached the upstream")
		}
	}
	if n := hits("passthrough-files"); n != 2 {
		t.Fatalf("passthrough reached the upstream %d times, want 2", n)
	}
	// The upstream gets the very path that matched, never a spelling it
	// could read as another endpoint.
	req, _ = http.NewRequest("GET", gatewayURL+"/pass/v1/models/..%2Ffiles", nil)
	req.Header.Set("x-api-key", k.Key)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if last, _ := env.mock.LastRequest(); last.Path != "/v1/files" {
		t.Fatalf("passthrough sent %q upstream, want /v1/files", last.Path)
	}
	for _, p := range []string{"/pass/v1/files/..;/batches", "/pass/v1/files/x%5C..%5Cbatches"} {
		req, _ = http.NewRequest("GET", gatewayURL+p, nil)
		req.Header.Set("x-api-key", k.Key)
		req.Header.Set("X-Test-Tag", "passthrough-odd")
		if resp, err = http.DefaultClient.Do(req); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		apiErr(t, resp, b, http.StatusNotFound, "unsupported_endpoint")
	}
	if n := hits("passthrough-odd"); n != 0 {
		t.Fatalf("an odd passthrough path reached the upstream %d times", n)
	}
	if got := getUser(t, u.ID); got.Balance != "1.000000000" || got.Held != "0.000000000" || len(usageOf(t, u.ID)) != 0 {
		t.Fatalf("a passthrough request was billed: %+v", got)
	}
}
