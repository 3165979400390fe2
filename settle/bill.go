package settle

import (
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/meter"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// Exchange is one metered request and its response as the gateway saw
// them end: what Bill needs to price it and write its usage record.
type Exchange struct {
	// Grant is the request's admission: who pays, and its hold.
	Grant billing.Grant
	// Request is the request as the meter read it.
	Request *meter.Request
	// Result is what the meter saw of the response.
	Result meter.Result
	// Terms are the terms meter.Bill bills Result under.
	Terms meter.BillTerms
	// Price is the model's price.
	Price money.Price

	// Status is the HTTP status sent to the client, and Outcome how the
	// request ended, as the usage record says.
	Status  int
	Outcome meter.Outcome
	// Endpoint is the request's path.
	Endpoint string
	// Start is when the request started, FirstByte when the first byte of
	// the response was sent (zero if none was), and End when it ended.
	Start, FirstByte, End time.Time
	// ClientIP is the client's address, or empty to keep none.
	ClientIP string
	// Currency is the currency of prices and balances.
	Currency string
}

// Billed is an exchange priced for settlement: the Record to settle, and
// what the gateway logs and counts of it.
type Billed struct {
	// Record is the settlement to hand to a Pipeline.
	Record Record
	// Tokens are the tokens billed, and Reasoning their reasoning part.
	Tokens    money.Tokens
	Reasoning int64
	// Cost is what the request is debited.
	Cost money.Nanos
	// Clamped is set when the upstream reported more tokens than the
	// request could produce, and the bound was billed (meter.Billed).
	Clamped bool
	// PricingErr is set when the tokens could not be priced (the cost
	// overflowed): Cost is then the hold.
	PricingErr error
}

// Bill bills the upstream's report, or an estimate where it has none
// (meter.Bill under x.Terms), prices the tokens and builds the settlement:
// the cost to debit, the tokens to count in the key's tpm window beyond
// what admission counted, and the usage record. It fails only when the
// usage record cannot be encoded; what was billed is then still returned,
// for the logs, but there is no Record to settle.
func Bill(x Exchange) (Billed, error) {
	g := x.Grant
	bill := meter.Bill(x.Request, x.Result, x.Terms)
	b := Billed{Tokens: tokensOf(bill.Usage), Reasoning: bill.Usage.ReasoningTokens, Clamped: bill.Clamped}
	b.Cost, b.PricingErr = x.Price.Cost(b.Tokens)
	if b.PricingErr != nil {
		b.Cost = g.Hold
	}

	rec := usagelog.Record{
		RequestID:         g.RequestID,
		Time:              x.Start.UTC(),
		User:              g.User,
		KeyID:             g.KeyID,
		Model:             x.Request.Model,
		Endpoint:          x.Endpoint,
		Stream:            x.Result.Stream,
		Status:            x.Status,
		Outcome:           string(x.Outcome),
		InputTokens:       b.Tokens.Input,
		CachedInputTokens: b.Tokens.CachedInput,
		CacheWriteTokens:  b.Tokens.CacheWrite,
		OutputTokens:      b.Tokens.Output,
		ReasoningTokens:   b.Reasoning,
		Cost:              b.Cost,
		Currency:          x.Currency,
		Estimated:         bill.Estimated,
		Clamped:           bill.Clamped,
		DurationMS:        x.End.Sub(x.Start).Milliseconds(),
		ClientIP:          x.ClientIP,
	}
	if !x.FirstByte.IsZero() {
		rec.TTFTMS = x.FirstByte.Sub(x.Start).Milliseconds()
	}
	usage, err := rec.AppendJSON(make([]byte, 0, 512))
	if err != nil {
		return b, err
	}
	b.Record = recordOf(g)
	b.Record.Cost = b.Cost
	// The tpm window got the request's estimate at admission: count what
	// it used beyond.
	b.Record.Tokens = max(b.Tokens.Input+b.Tokens.Output-g.TokensCounted, 0)
	b.Record.Usage = usage
	return b, nil
}

// tokensOf is the meter's count of a response as prices count it.
func tokensOf(u meter.Usage) money.Tokens {
	return money.Tokens{
		Input:       u.InputTokens,
		CachedInput: u.CachedInputTokens,
		CacheWrite:  u.CacheWriteTokens,
		Output:      u.OutputTokens,
	}
}
