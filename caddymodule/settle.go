package caddymodule

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/meter"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// meteredWriter forwards every write to the client at once while the
// meter observes the same bytes.
type meteredWriter struct {
	*caddyhttp.ResponseWriterWrapper
	obs         *meter.Observer
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

func newMeteredWriter(w http.ResponseWriter, req *meter.Request) *meteredWriter {
	return &meteredWriter{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		obs:                   meter.NewObserver(req),
		hiding:                req.InjectedUsage && !req.ClientWantsUsage,
	}
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
		n, err := m.ResponseWriter.Write(p)
		if m.compressed != nil && n > 0 {
			m.compressed.write(p[:n])
		}
		return n, err
	}
	if err := m.obs.Feed(m.ResponseWriter, p); err != nil {
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
	price billing.Price, start time.Time, aborted bool) {
	var out io.Writer = mw.ResponseWriter
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
		status = http.StatusBadGateway
		var he caddyhttp.HandlerError
		if errors.As(mw.upstreamErr, &he) && he.StatusCode != 0 {
			status = he.StatusCode
		}
		outcome = meter.OutcomeUpstreamError
	case r.Context().Err() != nil && outcome != meter.OutcomeCompleted:
		outcome = meter.OutcomeClientGone
	}

	// Bill the upstream's own report; fill what it lacks from an estimate
	// of what passed, and say so on the row.
	usage, estimated := res.Usage, false
	switch {
	case res.HasUsage && outcome == meter.OutcomeCompleted:
	case res.HasUsage:
		// A report cut short (e.g. Anthropic's message_start, then a
		// cut): its input is real, its output a placeholder.
		if est := estimateUsage(req, res); est.OutputTokens > usage.OutputTokens {
			usage.OutputTokens, estimated = est.OutputTokens, true
		}
	case status < 400 && mw.wroteHeader:
		usage, estimated = estimateUsage(req, res), true
	default:
		usage = meter.Usage{} // an upstream error without usage costs nothing
	}
	tokens := billing.Tokens{
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
	h.app.redis.settleLater(spooled{Grant: settlementGrant(g), Cost: cost, Tokens: tokens.Input + tokens.Output, Record: body},
		h.app.settling, h.log, func() {
			// The client has the whole response now, not after the
			// settlement is handed to a worker.
			if !aborted {
				_ = http.NewResponseController(mw).Flush()
			}
		})
}

// logFields are the access log's aitoken_* fields. They go in as one
// inline field (each ExtraLogFields.Add resets a cache) and are encoded
// only when a log writes the entry.
type logFields struct {
	requestID, user, keyID, model string
	input, output                 int64
	cost                          billing.Nanos
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

// estimateUsage estimates a response without a usage report: input from
// the request, output from the text that passed (meter.Estimate: a
// tokenizer for OpenAI-family models, a characters rule elsewhere).
func estimateUsage(req *meter.Request, res meter.Result) meter.Usage {
	return meter.Estimate(req, res)
}
