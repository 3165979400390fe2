package caddymodule

import (
	"context"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/meter"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// meteredWriter forwards every write to the client at once while the
// meter observes the same bytes.
type meteredWriter struct {
	*caddyhttp.ResponseWriterWrapper
	obs       *meter.Observer
	client    clientSink
	clientCtx context.Context
	// cancelOnGone returns the client's write errors, so reverse_proxy
	// stops (on_client_gone cancel); otherwise, once the client is gone,
	// writes are dropped and the upstream is still read to its end.
	cancelOnGone bool
	// upstream is the upstream request's context, when it outlives the
	// client's (on_client_gone finish).
	upstream context.Context
	// gone is set when the client went away while the response was still
	// being sent.
	gone        bool
	hiding      bool
	wroteHeader bool
	status      int
	firstByte   time.Time
	upstreamErr error
	// compressed is set when the upstream compressed the body anyway.
	compressed *compressedFeed
	// unreadable is set when the body is in an encoding the meter cannot read.
	unreadable bool
}

func newMeteredWriter(w http.ResponseWriter, r *http.Request, req *meter.Request, cancelOnGone bool) *meteredWriter {
	m := &meteredWriter{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		obs:                   meter.NewObserver(req),
		hiding:                req.InjectedUsage && !req.ClientWantsUsage,
		clientCtx:             r.Context(),
		cancelOnGone:          cancelOnGone,
	}
	m.client = clientSink{m}
	return m
}

// clientSink is where the meter sends the bytes for the client.
type clientSink struct{ m *meteredWriter }

// Write sends p to the client. Once the client is gone (its context ended
// or a write failed) and the upstream is to be read to its end, it drops p
// and reports success, so reverse_proxy keeps reading the upstream.
func (c clientSink) Write(p []byte) (int, error) {
	m := c.m
	if m.cancelOnGone {
		return m.ResponseWriter.Write(p)
	}
	if m.gone || m.clientCtx.Err() != nil {
		m.gone = true
		return len(p), nil
	}
	n, err := m.ResponseWriter.Write(p)
	if err != nil {
		m.gone = true
		return len(p), nil
	}
	return n, nil
}

// WriteHeader starts the meter on the final status.
func (m *meteredWriter) WriteHeader(code int) {
	if m.wroteHeader {
		return
	}
	if code < 200 {
		m.ResponseWriter.WriteHeader(code)
		return
	}
	m.wroteHeader, m.status = true, code
	m.obs.Start(code, m.Header().Get("Content-Type"))
	if enc := m.Header().Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		m.compressed = newCompressedFeed(enc, m.obs)
		m.unreadable = m.compressed == nil
		m.hiding = false
	}
	if m.hiding {
		// A hidden usage chunk changes the length.
		m.Header().Del("Content-Length")
	}
	m.ResponseWriter.WriteHeader(code)
}

// Write forwards p (less a hidden usage chunk) and lets the meter see it.
func (m *meteredWriter) Write(p []byte) (int, error) {
	if !m.wroteHeader {
		m.WriteHeader(http.StatusOK)
	}
	if m.firstByte.IsZero() && len(p) > 0 {
		m.firstByte = time.Now()
	}
	if m.compressed != nil || m.unreadable {
		n, err := m.client.Write(p)
		if m.compressed != nil && n > 0 {
			m.compressed.write(p[:n])
		}
		return n, err
	}
	if err := m.obs.Feed(m.client, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ReadFrom copies through Write, so the meter sees every byte.
func (m *meteredWriter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{m}, r)
}

type writerOnly struct{ io.Writer }

// finish closes the meter, prices the response, sets the log fields and
// settles it in Redis (or the spool).
func (h *Handler) finish(r *http.Request, mw *meteredWriter, g billing.Grant, req *meter.Request,
	price money.Price, start time.Time, aborted bool) {
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
	bill := meter.Bill(req, res, terms)
	usage, estimated := bill.Usage, bill.Estimated
	if bill.Clamped {
		countClamped(h.app.prices.Pattern(req.Model))
		h.log.Warn("the upstream reported more tokens than the request could produce; billed the bound",
			zap.String("request_id", g.RequestID), zap.String("model", req.Model))
	}
	tokens := money.Tokens{
		Input:       usage.InputTokens,
		CachedInput: usage.CachedInputTokens,
		CacheWrite:  usage.CacheWriteTokens,
		Output:      usage.OutputTokens,
	}
	cost, err := price.Cost(tokens)
	if err != nil {
		h.log.Error("pricing usage", zap.String("request_id", g.RequestID), zap.Error(err))
		cost = g.Hold
	}

	rec := usagelog.Record{
		RequestID:         g.RequestID,
		Time:              start.UTC(),
		User:              g.User,
		KeyID:             g.KeyID,
		Model:             req.Model,
		Endpoint:          r.URL.Path,
		Stream:            res.Stream,
		Status:            status,
		Outcome:           string(outcome),
		InputTokens:       tokens.Input,
		CachedInputTokens: tokens.CachedInput,
		CacheWriteTokens:  tokens.CacheWrite,
		OutputTokens:      tokens.Output,
		ReasoningTokens:   usage.ReasoningTokens,
		Cost:              cost,
		Currency:          h.app.Currency,
		Estimated:         estimated,
		Clamped:           bill.Clamped,
		DurationMS:        end.Sub(start).Milliseconds(),
	}
	if !mw.firstByte.IsZero() {
		rec.TTFTMS = mw.firstByte.Sub(start).Milliseconds()
	}
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && h.app.keepClientIP() {
		rec.ClientIP = ip
	}

	if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.Inline(&logFields{requestID: g.RequestID, user: g.User, keyID: g.KeyID, model: req.Model,
			input: tokens.Input, output: tokens.Output, cost: cost, outcome: outcome}))
	}

	countRequest(h.app.prices.Pattern(req.Model), outcome, tokens, usage.ReasoningTokens, cost)

	body, err := rec.AppendJSON(make([]byte, 0, 512))
	if err != nil {
		h.log.Error("encoding usage record", zap.String("request_id", g.RequestID), zap.Error(err))
		return
	}
	// The settlement is written ahead to the journal now, before the
	// response's end leaves the handler, and applied in Redis after it.
	h.app.redis.settleLater(spooled{Grant: settlementGrant(g), Cost: cost,
		// The tpm window got the request's estimate at admission: add what
		// it used beyond.
		Tokens: max(tokens.Input+tokens.Output-g.TokensCounted, 0), Record: body},
		h.app.settling, h.log, func() {
			// The client has the whole response now, not after the
			// settlement is handed to a worker.
			if !aborted && !mw.gone {
				_ = http.NewResponseController(mw).Flush()
			}
		})
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

// settlementGrant is the part of g a settlement needs (the journal and
// spool write it for every request): who pays, the hold, and the key's
// tpm limit; not the key's models, IPs or rate state.
func settlementGrant(g billing.Grant) billing.Grant {
	return billing.Grant{KeyID: g.KeyID, User: g.User, RequestID: g.RequestID, Hold: g.Hold, NoHold: g.NoHold,
		Key: billing.KeyRecord{ID: g.Key.ID, User: g.Key.User, TPM: g.Key.TPM}}
}
