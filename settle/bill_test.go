package settle

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/meter"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

func exchange() Exchange {
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	return Exchange{
		Grant: billing.Grant{KeyID: "key_1", User: "usr_1", RequestID: "req_1", Hold: 9_000_000, TokensCounted: 100,
			Key: billing.KeyRecord{ID: "key_1", User: "usr_1", TPM: 1000}},
		Request: &meter.Request{Format: meter.FormatChat, Model: "gpt-x", Choices: 1, InputEstimate: 60,
			Body: []byte(`{"model":"gpt-x","messages":[{"role":"user","content":"hi"}]}`)},
		Result: meter.Result{HasUsage: true, Outcome: meter.OutcomeCompleted, Stream: true,
			Usage: meter.Usage{InputTokens: 50, CachedInputTokens: 20, OutputTokens: 70, ReasoningTokens: 30}},
		Terms:    meter.BillTerms{Outcome: meter.OutcomeCompleted, Status: 200, Answered: true, OutputLimit: 1000},
		Price:    money.Price{Input: 1_000_000_000, CachedInput: 500_000_000, CacheWrite: 1_000_000_000, Output: 2_000_000_000},
		Status:   200,
		Outcome:  meter.OutcomeCompleted,
		Endpoint: "/v1/chat/completions",
		Start:    start, FirstByte: start.Add(150 * time.Millisecond), End: start.Add(2 * time.Second),
		ClientIP: "203.0.113.7",
		Currency: "USD",
	}
}

// TestBill bills a completed report: the tokens reported, priced, the
// tokens beyond what admission counted, and the usage record.
func TestBill(t *testing.T) {
	x := exchange()
	b, err := Bill(x)
	if err != nil {
		t.Fatal(err)
	}
	wantTokens := money.Tokens{Input: 50, CachedInput: 20, Output: 70}
	// 30 uncached at 1 + 20 cached at 0.5 + 70 output at 2, per million.
	const wantCost = 30*1000 + 20*500 + 70*2000
	if b.Tokens != wantTokens || b.Reasoning != 30 || b.Cost != wantCost || b.Clamped || b.PricingErr != nil {
		t.Fatalf("billed %+v", b)
	}
	r := b.Record
	if r.RequestID != "req_1" || r.User != "usr_1" || r.KeyID != "key_1" || r.Hold != 9_000_000 || r.TPM != 1000 ||
		r.NoHold || r.Cost != wantCost || r.Tokens != 50+70-100 || r.Mode != "" {
		t.Fatalf("record %+v", r)
	}
	var u usagelog.Record
	if err := json.Unmarshal(r.Usage, &u); err != nil {
		t.Fatal(err)
	}
	want := usagelog.Record{RequestID: "req_1", Time: x.Start.UTC(), User: "usr_1", KeyID: "key_1", Model: "gpt-x",
		Endpoint: "/v1/chat/completions", Stream: true, Status: 200, Outcome: "completed",
		InputTokens: 50, CachedInputTokens: 20, OutputTokens: 70, ReasoningTokens: 30, Cost: wantCost, Currency: "USD",
		DurationMS: 2000, TTFTMS: 150, ClientIP: "203.0.113.7"}
	if u != want {
		t.Fatalf("usage record\n%+v\nwant\n%+v", u, want)
	}

	// Admission counted more than was used: nothing more to count.
	x.Grant.TokensCounted = 500
	if b, _ := Bill(x); b.Record.Tokens != 0 {
		t.Fatalf("tokens beyond admission %d, want 0", b.Record.Tokens)
	}
}

// TestBillEstimatesAndKeepsNoIP bills an answer without a report from an
// estimate, with no first byte and no client IP to keep.
func TestBillEstimatesAndKeepsNoIP(t *testing.T) {
	x := exchange()
	x.Result = meter.Result{Outcome: meter.OutcomeCutOff, OutputChars: 400, OutputSample: []byte("hello there")}
	x.Terms.Outcome = meter.OutcomeCutOff
	x.Outcome = meter.OutcomeCutOff
	x.FirstByte, x.ClientIP = time.Time{}, ""
	b, err := Bill(x)
	if err != nil {
		t.Fatal(err)
	}
	var u usagelog.Record
	if err := json.Unmarshal(b.Record.Usage, &u); err != nil {
		t.Fatal(err)
	}
	if !u.Estimated || u.InputTokens == 0 || u.OutputTokens == 0 || u.TTFTMS != 0 || u.ClientIP != "" || u.Outcome != "upstream_cut" {
		t.Fatalf("usage record %+v", u)
	}
}

// TestBillChargesTheHoldWhenPricingFails: a cost that overflows is
// reported, and the hold is charged instead.
func TestBillChargesTheHoldWhenPricingFails(t *testing.T) {
	x := exchange()
	x.Price = money.Price{Input: money.MaxPrice, Output: money.MaxPrice}
	x.Terms.OutputLimit = 0 // no bound but the meter's largest count
	x.Result.Usage = meter.Usage{InputTokens: 1000, OutputTokens: 2_000_000}
	b, err := Bill(x)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(b.PricingErr, money.ErrCostOverflow) || b.Cost != x.Grant.Hold || b.Record.Cost != x.Grant.Hold {
		t.Fatalf("billed %+v", b)
	}
}

// Fields a client chooses (the model name, the path) cannot break a usage
// record's line: records go one per line into the journal and into batch
// entries of the usage stream, so a newline there would split one record
// in two, or get the whole batch refused.
func TestBillRecordIsOneLine(t *testing.T) {
	x := exchange()
	x.Request.Model = "gpt-x\n{\"request_id\":\"req_forged\",\"user\":\"victim\"}\r\n\u2028"
	x.Endpoint = "/v1/chat/completions\n"
	b, err := Bill(x)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range [][]byte{b.Record.Usage, b.Record.AppendJSON(nil)} {
		if i := bytes.IndexAny(line, "\r\n"); i >= 0 {
			t.Fatalf("record has a line break at %d: %s", i, line)
		}
	}
	var u usagelog.Record
	if err := json.Unmarshal(b.Record.Usage, &u); err != nil || u.Model != x.Request.Model || u.User != "usr_1" {
		t.Fatalf("usage record %+v, %v; want the model as sent, billed to usr_1", u, err)
	}
}
