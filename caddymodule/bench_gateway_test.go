package caddymodule_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// BenchmarkGatewayRequest sends short chat requests, one at a time,
// through the Caddy running in this test binary to the mock provider:
// through reverse_proxy alone (bare) and with aitoken in front (metered).
// What a metered request costs beyond a bare one, in time and allocations
// (and, run under callgrind, in instructions, which repeat exactly where
// a VM's timings do not), is the gateway's own work, its background share
// included (settlement batches and the ledger flusher run in this
// process). Redis runs apart and is not counted.
func BenchmarkGatewayRequest(b *testing.B) {
	loadForBench(b)
	_, k := newAccount(b, "1000000.00", "")
	body := []byte(`{"model":"test-model","messages":[{"role":"system","content":"You are a helpful assistant."},` +
		`{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64}`)
	for _, site := range []string{"bare", "metered"} {
		b.Run(site, func(b *testing.B) {
			url := gatewayURL + "/bench/" + site + "/v1/chat/completions"
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+k.Key) // bare forwards it unread
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("%s: %d", site, resp.StatusCode)
				}
			}
		})
	}
}

// loadForBench runs the test config on this binary's Caddy, as gateway
// does for a test, with the ledger flushed every second as in production.
func loadForBench(b *testing.B) {
	startOnce.Lock()
	defer startOnce.Unlock()
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(config("1s")), nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := caddy.Load(cfg, false); err != nil {
		b.Fatal(err)
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}
