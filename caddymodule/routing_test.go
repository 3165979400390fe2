package caddymodule_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// failing counts what reached env.failing: health checks and the rest.
var failing struct{ checks, requests atomic.Int64 }

// failingUpstream answers 500 to everything: a provider account that is down.
func failingUpstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			failing.checks.Add(1)
		} else {
			failing.requests.Add(1)
		}
		http.Error(w, `{"error":{"message":"down"}}`, http.StatusInternalServerError)
	})
}

// mock2Hits is how many requests tagged tag reached the second provider.
func mock2Hits(tag string) (n int, last []byte) {
	for _, r := range env.mock2.Requests() {
		if r.Header.Get("X-Test-Tag") == tag {
			n++
			last = r.Body
		}
	}
	return n, last
}

// chatBody is a chat request for model.
func chatBody(model string) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}],"max_tokens":10}`
}

// Two models on two providers: the handler sets {http.vars.aitoken.model}
// before the routes after it are matched, so a vars matcher picks the
// upstream. Each request is billed once, at its model's price.
func TestRoutesModelsToTheirProviders(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	resp, body := post(t, "/routed/v1/chat/completions", k.Key, chatBody("test-model"), "X-Test-Tag", "route-a")
	if resp.StatusCode != 200 {
		t.Fatalf("test-model: %d %s", resp.StatusCode, body)
	}
	resp, body = post(t, "/routed/v1/chat/completions", k.Key, chatBody("other-model"), "X-Test-Tag", "route-b")
	if resp.StatusCode != 200 {
		t.Fatalf("other-model: %d %s", resp.StatusCode, body)
	}
	if a, _ := mock2Hits("route-a"); hits("route-a") != 1 || a != 0 {
		t.Fatalf("test-model reached provider 1 %d times, provider 2 %d times", hits("route-a"), a)
	}
	if b, _ := mock2Hits("route-b"); hits("route-b") != 0 || b != 1 {
		t.Fatalf("other-model reached provider 1 %d times, provider 2 %d times", hits("route-b"), b)
	}
	recs := waitUsage(t, u.ID, 2)
	// The mock reports 12 input tokens and one output token per delta (5
	// by default): test-model 1.00/2.00, other-model 1.00/1.00 per 1M.
	costs := map[string]int64{}
	for _, r := range recs {
		costs[r.Model] = mustNanos(t, r.Cost)
	}
	if costs["test-model"] != 12_000+5*2_000 || costs["other-model"] != 12_000+5*1_000 {
		t.Fatalf("costs by model: %v", costs)
	}
	if moved := 1_000_000_000 - mustNanos(t, getUser(t, u.ID).Balance); moved != costs["test-model"]+costs["other-model"] {
		t.Fatalf("balance moved %d, rows cost %v", moved, costs)
	}
}

// An alias is sent upstream under the provider's name, routed and billed
// as that model, and recorded under it; an alias with its own price line
// (pre-alias, covered by pre-*) is billed at that price.
func TestAliasRewritesModelOnce(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	for _, stream := range []bool{false, true} {
		b := chatBody("cheap-model")
		if stream {
			b = `{"stream":true,` + b[1:]
		}
		resp, body := post(t, "/routed/v1/chat/completions", k.Key, b, "X-Test-Tag", "alias-"+k.ID)
		if resp.StatusCode != 200 {
			t.Fatalf("alias: %d %s", resp.StatusCode, body)
		}
		if stream && strings.Contains(string(body), `"choices":[]`) {
			t.Fatal("the injected usage chunk reached the client")
		}
		n, sent := mock2Hits("alias-" + k.ID)
		var got map[string]any
		if err := json.Unmarshal(sent, &got); err != nil {
			t.Fatalf("upstream body %s: %v", sent, err)
		}
		if got["model"] != "other-model" || strings.Contains(string(sent), "cheap-model") || (stream && got["stream_options"] == nil) {
			t.Fatalf("request %d reached provider 2 as %s", n, sent)
		}
	}
	resp, body := post(t, "/routed/v1/chat/completions", k.Key, chatBody("pre-alias"), "X-Test-Tag", "alias1-"+k.ID)
	if resp.StatusCode != 200 || hits("alias1-"+k.ID) != 1 {
		t.Fatalf("pre-alias: %d %s, %d hits on provider 1", resp.StatusCode, body, hits("alias1-"+k.ID))
	}
	if last, _ := env.mock.LastRequest(); !strings.Contains(string(last.Body), `"model":"test-model"`) {
		t.Fatalf("provider 1 got %s", last.Body)
	}
	recs := waitUsage(t, u.ID, 3)
	var total int64
	for _, r := range recs {
		c := mustNanos(t, r.Cost)
		total += c
		switch r.Model {
		case "other-model": // the provider model's price: 1.00/1.00
			if c != 12_000+5*1_000 {
				t.Errorf("cheap-model billed %d: %+v", c, r)
			}
		case "test-model": // pre-* prices the alias itself: 3.00/3.00
			if c != 3*(12_000+5*1_000) {
				t.Errorf("pre-alias billed %d: %+v", c, r)
			}
		default:
			t.Errorf("usage row for %q", r.Model)
		}
	}
	if moved := 1_000_000_000 - mustNanos(t, getUser(t, u.ID).Balance); moved != total {
		t.Fatalf("balance moved %d, rows cost %d", moved, total)
	}
}

// A key's models restrict the name the customer uses: an alias on the list
// reaches its provider model even when that model is not on the list, and
// the provider model's own name is refused; GET /v1/models lists aliases.
func TestAliasAndKeyModels(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", `{"user":"$USER","models":["cheap-model"]}`)
	if resp, body := post(t, "/routed/v1/chat/completions", k.Key, chatBody("cheap-model")); resp.StatusCode != 200 {
		t.Fatalf("allowed alias: %d %s", resp.StatusCode, body)
	}
	resp, body := post(t, "/routed/v1/chat/completions", k.Key, chatBody("other-model"))
	apiErr(t, resp, body, http.StatusForbidden, "model_not_allowed")
	_, k2 := newAccount(t, "1.00", `{"user":"$USER","models":["other-model"]}`)
	resp, body = post(t, "/routed/v1/chat/completions", k2.Key, chatBody("cheap-model"))
	apiErr(t, resp, body, http.StatusForbidden, "model_not_allowed")
	waitUsage(t, u.ID, 1)

	list := func(key string) []string {
		req, _ := http.NewRequest("GET", gatewayURL+"/routed/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range out.Data {
			ids = append(ids, d.ID)
		}
		return ids
	}
	if got := list(k.Key); !slices.Equal(got, []string{"cheap-model"}) {
		t.Fatalf("models of a key limited to the alias: %v", got)
	}
	_, k3 := newAccount(t, "1.00", "")
	if got := list(k3.Key); !slices.Contains(got, "cheap-model") || !slices.Contains(got, "pre-alias") || !slices.Contains(got, "test-model") {
		t.Fatalf("models of an unlimited key: %v", got)
	}
}

// One model on two upstreams: the first refuses connections, Caddy's load
// balancing retries the second within lb_try_duration, and the request is
// billed once. lb_policy first always tries the refusing upstream first
// once its 100ms failure mark has passed, so each request here is a retry.
func TestFailoverRetryIsBilledOnce(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	for i := range 3 {
		time.Sleep(150 * time.Millisecond) // past fail_duration
		tag := "lb-" + k.ID + "-" + string(rune('a'+i))
		resp, body := post(t, "/lb/v1/chat/completions", k.Key, chatBody("test-model"), "X-Test-Tag", tag)
		if resp.StatusCode != 200 {
			t.Fatalf("failover: %d %s", resp.StatusCode, body)
		}
		if n, sent := mock2Hits(tag); n != 1 || !strings.Contains(string(sent), `"messages"`) {
			t.Fatalf("second upstream got %d requests, last %s", n, sent)
		}
	}
	recs := waitUsage(t, u.ID, 3)
	var total int64
	for _, r := range recs {
		if r.Outcome != "completed" || r.Model != "test-model" {
			t.Fatalf("usage row %+v", r)
		}
		total += mustNanos(t, r.Cost)
	}
	if total != 3*(12_000+5*2_000) {
		t.Fatalf("rows cost %d", total)
	}
	if moved := 1_000_000_000 - mustNanos(t, getUser(t, u.ID).Balance); moved != total {
		t.Fatalf("balance moved %d, rows cost %d", moved, total)
	}
	time.Sleep(300 * time.Millisecond) // a late second settlement would show now
	if recs := usageOf(t, u.ID); len(recs) != 3 {
		t.Fatalf("%d usage rows for 3 requests", len(recs))
	}
}

// Active health checks take an upstream that answers errors out of the
// rotation: once it failed a check, requests go to the healthy one.
func TestHealthCheckSkipsFailingUpstream(t *testing.T) {
	gateway(t)
	u, k := newAccount(t, "1.00", "")
	deadline := time.Now().Add(5 * time.Second)
	for failing.checks.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no health check reached the failing upstream")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	before := failing.requests.Load()
	tag := "hc-" + k.ID
	resp, body := post(t, "/hc/v1/chat/completions", k.Key, chatBody("test-model"), "X-Test-Tag", tag)
	if resp.StatusCode != 200 {
		t.Fatalf("health-checked route: %d %s", resp.StatusCode, body)
	}
	if n, _ := mock2Hits(tag); n != 1 || failing.requests.Load() != before {
		t.Fatalf("healthy upstream got %d, failing one %d", n, failing.requests.Load()-before)
	}
	if recs := waitUsage(t, u.ID, 1); mustNanos(t, recs[0].Cost) != 12_000+5*2_000 {
		t.Fatalf("usage row %+v", recs[0])
	}
}
