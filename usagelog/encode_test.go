package usagelog

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

func checkAppendJSON(t *testing.T, r Record) {
	t.Helper()
	want, wantErr := json.Marshal(&r)
	got, err := r.AppendJSON([]byte("prefix"))
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("AppendJSON error %v, json.Marshal error %v", err, wantErr)
	}
	if err != nil {
		return
	}
	if !bytes.Equal(got, append([]byte("prefix"), want...)) {
		t.Fatalf("AppendJSON differs from json.Marshal:\n got %s\nwant prefix%s", got, want)
	}
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	base := rec("req_0194f1a2b3c4d5e6f7a8b9c0", "u1", time.Date(2026, 11, 26, 20, 15, 45, 123456789, time.UTC))
	checkAppendJSON(t, base)
	odd := base
	odd.Model, odd.Endpoint, odd.ClientIP = "gpt-<4o>&\"\\\n\t\x01é\u2028", "/v1/chat/completions?x=\xff", "::1"
	odd.CacheWriteTokens, odd.Cost, odd.Estimated, odd.Clamped = 7, -1_234_567_890, true, true
	odd.Time = base.Time.In(time.FixedZone("x", -3*3600-1800))
	checkAppendJSON(t, odd)
	checkAppendJSON(t, Record{})
	far := base
	far.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	checkAppendJSON(t, far)
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("req_1", "user", "gpt-4o", "/v1/chat/completions", "completed", "USD", "203.0.113.7", int64(1200), int64(-5), int64(1_795_000_000_123_456_789))
	f.Add("<&>", "\x00\x1f", "é\u2028\u2029", "\xff\xfe", "", "", "", int64(0), int64(1<<62), int64(0))
	f.Fuzz(func(t *testing.T, id, user, model, endpoint, outcome, currency, ip string, n, cost, unixNanos int64) {
		checkAppendJSON(t, Record{
			RequestID: id, Time: time.Unix(0, unixNanos).UTC(), User: user, KeyID: user + "k", Model: model,
			Endpoint: endpoint, Stream: n%2 == 0, Status: int(n % 600), Outcome: outcome, InputTokens: n,
			CachedInputTokens: n / 2, CacheWriteTokens: n % 3, OutputTokens: -n, ReasoningTokens: n % 7,
			Cost: money.Nanos(cost), Currency: currency, Estimated: n%5 == 0, Clamped: n%4 == 1, DurationMS: n, TTFTMS: n / 3, ClientIP: ip,
		})
	})
}

func BenchmarkAppendJSON(b *testing.B) {
	r := rec("req_0194f1a2b3c4d5e6f7a8b9c0", "u1", time.Now().UTC())
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = r.AppendJSON(buf[:0])
	}
}
