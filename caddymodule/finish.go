package caddymodule

import (
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/lease"
	"github.com/cnaitoken/caddy-aitoken/meter"
	"github.com/cnaitoken/caddy-aitoken/settle"
)

// finish closes the meter, reads how the exchange ended, has it billed,
// sets the log fields and metrics, and hands the settlement to the
// pipeline.
func (h *Handler) finish(r *http.Request, mw *meteredWriter, g billing.Grant, t lease.Ticket, req *meter.Request,
	price money.Price, start time.Time, aborted bool) {
	// The response ends here at the latest, whatever happens below.
	defer mw.release(!aborted)
	var out io.Writer = mw.client
	if aborted || mw.compressed != nil || mw.unreadable {
		out = io.Discard
	}
	if mw.compressed != nil {
		mw.compressed.close()
	}
	_ = mw.obs.Close(out)
	res := mw.obs.Result()
	end := time.Now()

	status := mw.status
	outcome := res.Outcome
	switch {
	case !mw.wroteHeader:
		status = mw.status
		if status == 0 {
			status = upstreamStatus(mw.upstreamErr)
		}
		outcome = outcomeUpstreamUnreachable
		if status == statusClientClosed {
			outcome = meter.OutcomeClientGone
		}
	case mw.status == statusClientClosed && r.Context().Err() != nil:
		// reverse_proxy's answer when the client left before the
		// upstream's answer began: nothing came from the upstream.
		outcome = meter.OutcomeClientGone
	case mw.gone || r.Context().Err() != nil && outcome != meter.OutcomeCompleted:
		outcome = meter.OutcomeClientGone
	}
	answered := mw.wroteHeader && !(mw.status == statusClientClosed && !res.HasUsage)

	// Bill the upstream's own report, bounded by what the request could
	// produce; fill what it lacks from an estimate of what passed.
	terms := meter.BillTerms{Outcome: res.Outcome, Status: status, Answered: answered,
		OutputLimit: h.billedOutputLimit(req)}
	if !answered {
		terms.Outcome = outcome
	}
	if outcome == meter.OutcomeClientGone && res.Outcome != meter.OutcomeCompleted {
		// The upstream read the whole input before the request was cut.
		terms.MinInput = req.InputEstimate
		if mw.upstream != nil && cutAfterClientLeft(mw.upstream) {
			// The gateway cut an upstream still generating: it may have
			// produced up to the output the hold covered.
			terms.MinOutput = h.outputLimit(req) * max(req.Choices, 1)
		}
	}
	x := settle.Exchange{Grant: g, Request: req, Result: res, Terms: terms, Price: price,
		Status: status, Outcome: outcome, Endpoint: r.URL.Path,
		Start: start, FirstByte: mw.firstByte, End: end, Currency: h.app.Currency}
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && h.app.keepClientIP() {
		x.ClientIP = ip
	}
	b, err := settle.Bill(x)
	// The bill holds nothing of the meter's: its Observer can serve the
	// next response.
	mw.obs.Free()
	mw.obs = nil
	if b.Clamped {
		countClamped(h.app.prices.Pattern(req.Model))
		h.log.Warn("the upstream reported more tokens than the request could produce; billed the bound",
			zap.String("request_id", g.RequestID), zap.String("model", req.Model))
	}
	if b.PricingErr != nil {
		h.log.Error("pricing usage", zap.String("request_id", g.RequestID), zap.Error(b.PricingErr))
	}

	if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok && accessLogged(r) {
		mw.log = logFields{requestID: g.RequestID, user: g.User, keyID: g.KeyID, model: req.Model,
			input: b.Tokens.Input, output: b.Tokens.Output, cost: b.Cost, outcome: outcome}
		extra.Add(zap.Inline(&mw.log))
	}

	countRequest(h.app.prices.Pattern(req.Model), outcome, b.Tokens, b.Reasoning, b.Cost)

	if err != nil {
		if g.Lease != "" {
			h.app.redis.leases.Release(t)
		}
		h.log.Error("encoding usage record", zap.String("request_id", g.RequestID), zap.Error(err))
		return
	}
	if g.Lease != "" {
		b.Record.Seq = h.app.redis.leases.Settle(t, b.Cost)
		if g.Key.TPM > 0 {
			// Tokens beyond what admission counted, against this node's
			// share of the key's tpm window.
			h.app.redis.rates.Used(g.KeyID, b.Record.Tokens)
		}
	}
	// The settlement is written ahead to the journal now, before the
	// response's end leaves the handler, and applied in Redis after it.
	h.app.settling.begin()
	h.app.redis.settlements.Later(b.Record, func() {
		// The client has the whole response now, not after the
		// settlement is handed to a worker.
		mw.release(!aborted)
	}, h.app.settling.end)
}

// accessLogged reports whether r's server writes access logs. Only then
// do the aitoken_* fields go in: ExtraLogFields.Add costs two allocations
// a request, for fields nothing would read.
func accessLogged(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return !ok || srv.Logs != nil
}

// statusClientClosed is the status reverse_proxy (and nginx) gives a
// request whose client went away before it was answered.
const statusClientClosed = 499

// outcomeUpstreamUnreachable is the outcome of a request whose upstream
// gave no response at all (refused connection, no healthy upstream,
// timeout); the row's status says which (502, 503, 504).
const outcomeUpstreamUnreachable meter.Outcome = "upstream_unreachable"

// logFields are the access log's aitoken_* fields. They go in as one
// inline field (each ExtraLogFields.Add resets a cache) and are encoded
// only when a log writes the entry.
type logFields struct {
	requestID, user, keyID, model string
	input, output                 int64
	cost                          money.Nanos
	outcome                       meter.Outcome
}

// MarshalLogObject writes the fields.
func (f *logFields) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("aitoken_request_id", f.requestID)
	enc.AddString("aitoken_user", f.user)
	enc.AddString("aitoken_key_id", f.keyID)
	enc.AddString("aitoken_model", f.model)
	enc.AddInt64("aitoken_input_tokens", f.input)
	enc.AddInt64("aitoken_output_tokens", f.output)
	enc.AddString("aitoken_cost", f.cost.String())
	enc.AddString("aitoken_outcome", string(f.outcome))
	return nil
}
