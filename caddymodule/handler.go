package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/lease"
	"github.com/cnaitoken/caddy-aitoken/meter"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler meters an AI API route: it checks the caller's key and balance
// in Redis, reserves a hold, passes the request on (to reverse_proxy), and
// bills the tokens it sees in the response as it streams past.
type Handler struct {
	// Models this route serves. Default: every model with a price.
	Models []string `json:"models,omitempty"`

	// MaxRequestBody is the largest request body accepted, in bytes; a
	// larger one gets 413. Default: 8MiB.
	MaxRequestBody int64 `json:"max_request_body,omitempty"`

	// ReserveOutputTokens is how many output tokens the hold covers at
	// least when a request sets no output limit (max_tokens and the like):
	// a balance that cannot cover this much is refused with 402.
	// Default: 4096.
	ReserveOutputTokens int64 `json:"reserve_output_tokens,omitempty"`

	// MaxOutputTokens is the most output tokens one choice of a request
	// that sets no output limit is billed for (more only when that much
	// text visibly passed; hidden reasoning beyond it is not billed). Such
	// a request holds as much of the available balance as there is, up to
	// its input bound and this many output tokens, so concurrent requests
	// cannot overdraw the balance. Raise it for models that think longer
	// (the operator pays what is not billed); lower it so small balances
	// run more requests at once. Default: 32768.
	MaxOutputTokens int64 `json:"max_output_tokens,omitempty"`

	// OnRedisError says what to do when Redis cannot be reached: "deny"
	// answers 503; "allow" serves keys this node saw valid in the last ten
	// minutes, without a hold, and bills them when Redis is back (their
	// settlements wait in the local spool). Default: "deny".
	OnRedisError string `json:"on_redis_error,omitempty"`

	// InjectStreamUsage asks the upstream for a usage report on streams
	// (stream_options.include_usage) and hides that report from clients
	// that did not ask for it. Turn off for upstreams that reject the
	// field. Default: true.
	InjectStreamUsage *bool `json:"inject_stream_usage,omitempty"`

	// Passthrough lists further paths, as Caddy path matcher patterns
	// (e.g. "/v1/files*"), that a valid key may reach UNMETERED: nothing is
	// held or billed for them, and they are shared by every customer, since
	// they all use the operator's upstream account. Every path that is
	// neither metered, the model list, nor listed here is refused with 404
	// unsupported_endpoint before anything goes upstream. Default: none.
	Passthrough []string `json:"passthrough,omitempty"`

	// OnClientGone says what happens to the upstream request when the
	// client goes away mid-response: "finish" reads the upstream response
	// to its end (for at most ClientGoneTimeout) and bills the upstream's
	// own usage report, since the provider bills the operator for it;
	// "cancel" stops the upstream at once and bills at least the whole
	// input, as estimated for the hold, plus the output seen. The usage
	// row's outcome is client_gone either way. Default: "finish".
	OnClientGone string `json:"on_client_gone,omitempty"`

	// Aliases maps a model name customers use to the provider model the
	// upstream is asked for (e.g. "deepseek-chat": "deepseek-v4-flash"):
	// the body's model field is rewritten once, and the usage row records
	// the provider model. The price is the alias name's own price line if
	// there is one, else the provider model's. The route's models and a
	// key's models restrict the customer-facing name. Default: none.
	Aliases map[string]string `json:"aliases,omitempty"`

	// ClientGoneTimeout bounds how long the upstream is still read after
	// the client went away (on_client_gone finish). Default: 2m.
	ClientGoneTimeout caddy.Duration `json:"client_gone_timeout,omitempty"`

	app         *App
	log         *zap.Logger
	models      map[string]struct{}
	inject      bool
	passthrough caddyhttp.MatchPath
}

// Defaults of the handler options.
const (
	defaultMaxRequestBody      = 8 << 20
	defaultReserveOutputTokens = 4096
	defaultMaxOutputTokens     = 32 << 10
	defaultClientGoneTimeout   = 2 * time.Minute
	settleTimeout              = 5 * time.Second

	// smallBody is the largest body read before the key is known to
	// exist: a larger one (or one of unknown length) is read only after a
	// key check, so a stranger cannot make the gateway read megabytes.
	smallBody = 64 << 10
)

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.aitoken",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds the aitoken app and fills defaults.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.log = ctx.Logger()
	appIface, err := ctx.AppIfConfigured("aitoken")
	if err != nil {
		return fmt.Errorf("the aitoken handler needs the aitoken global option (prices, redis): %v", err)
	}
	h.app = appIface.(*App)
	h.app.aliases.add(h.Aliases)
	if h.MaxRequestBody <= 0 {
		h.MaxRequestBody = defaultMaxRequestBody
	}
	if h.ReserveOutputTokens <= 0 {
		h.ReserveOutputTokens = defaultReserveOutputTokens
	}
	if h.MaxOutputTokens <= 0 {
		h.MaxOutputTokens = defaultMaxOutputTokens
	}
	if h.OnRedisError == "" {
		h.OnRedisError = "deny"
	}
	h.inject = h.InjectStreamUsage == nil || *h.InjectStreamUsage
	if h.OnClientGone == "" {
		h.OnClientGone = onClientGoneFinish
	}
	if h.ClientGoneTimeout <= 0 {
		h.ClientGoneTimeout = caddy.Duration(defaultClientGoneTimeout)
	}
	if len(h.Passthrough) > 0 {
		h.passthrough = slices.Clone(caddyhttp.MatchPath(h.Passthrough))
		if err := h.passthrough.Provision(ctx); err != nil {
			return fmt.Errorf("passthrough: %v", err)
		}
	}
	if len(h.Models) > 0 {
		h.models = make(map[string]struct{}, len(h.Models))
		for _, m := range h.Models {
			h.models[m] = struct{}{}
		}
	}
	return nil
}

// Validate checks the options.
func (h *Handler) Validate() error {
	if h.OnRedisError != "deny" && h.OnRedisError != "allow" {
		return fmt.Errorf("on_redis_error %q: want deny or allow", h.OnRedisError)
	}
	if h.OnClientGone != onClientGoneFinish && h.OnClientGone != onClientGoneCancel {
		return fmt.Errorf("on_client_gone %q: want finish or cancel", h.OnClientGone)
	}
	if h.ReserveOutputTokens > meter.MaxOutputLimit || h.MaxOutputTokens > meter.MaxOutputLimit {
		return fmt.Errorf("reserve_output_tokens and max_output_tokens: at most %d", meter.MaxOutputLimit)
	}
	for _, p := range h.Passthrough {
		if p == "" || p[0] != '/' && p[0] != '*' {
			return fmt.Errorf("passthrough %q: want a path pattern such as /v1/files*", p)
		}
	}
	if err := h.validateAliases(); err != nil {
		return err
	}
	for _, m := range h.Models {
		if _, ok := h.priceOf(m); !ok {
			return fmt.Errorf("models: %q has no price in the aitoken global option", m)
		}
	}
	return nil
}

// Values of on_client_gone.
const (
	onClientGoneFinish = "finish"
	onClientGoneCancel = "cancel"
)

// ServeHTTP admits, forwards and meters one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	h.app.inflight.begin()
	defer h.app.inflight.end()
	if err := h.app.ready(); err != nil {
		h.log.Error("aitoken state not ready", zap.Error(err))
		h.writeRefusal(w, errUnavailable, "")
		return nil
	}

	requestID := billing.NewRequestID()
	w.Header()[hdrRequestID] = []string{requestID}

	secret := keyFromRequest(r)
	if secret == "" {
		h.writeRefusal(w, errMissingKey, "")
		return nil
	}
	keyHash := billing.HashKey(secret)

	format, clean, lower := endpointOf(r)
	if r.Method != http.MethodPost || format == meter.FormatUnknown {
		return h.serveUnmetered(w, r, next, keyHash, clean, lower)
	}
	// The upstream gets the very path the meter read (the meter ignores a
	// trailing slash).
	if p := strings.TrimSuffix(clean, "/"); r.URL.Path != p || r.URL.RawPath != "" {
		r.URL.Path, r.URL.RawPath = p, ""
	}

	if r.ContentLength > h.MaxRequestBody || r.ContentLength < 0 || r.ContentLength > smallBody {
		// A large body is read only for a key that exists.
		if _, err := h.checkKey(r, keyHash); err != nil {
			h.answerAuthError(w, r, err, "")
			return nil
		}
		if r.ContentLength > h.MaxRequestBody {
			h.writeRefusal(w, errTooLarge, "")
			return nil
		}
	}
	req, price, reqErr := h.readRequest(r, format)
	if reqErr != nil {
		if reqErr == errClientClosed {
			h.writeRefusal(w, reqErr, "")
			return nil
		}
		// Authenticate first, so a bad key is a 401 whatever the body.
		if _, err := h.checkKey(r, keyHash); err != nil &&
			!errors.Is(err, billing.ErrModelNotAllowed) {
			h.answerAuthError(w, r, err, "")
			return nil
		}
		h.writeRefusal(w, reqErr, "")
		return nil
	}

	if e := checkBetas(r.Header); e != nil {
		h.writeRefusal(w, e, req.Model)
		return nil
	}
	choices := max(req.Choices, 1)
	tokens := req.InputEstimate + h.outputLimit(req)*choices // counted against tpm now
	hold, err := price.Hold(req.InputEstimate, h.outputLimit(req)*choices)
	if err != nil {
		h.writeRefusal(w, errQuota, req.Model)
		return nil
	}
	// What the request can cost at most (Bill's bounds): the hold grows
	// towards it as far as the balance allows.
	upTo, err := price.Hold(meter.MaxInputTokens(req), h.billedOutputLimit(req)*choices)
	if err != nil {
		upTo = money.MaxNanos
	}
	g, ticket, local, err := h.admitLocal(r, keyHash, req.Model, requestID, hold, upTo, tokens)
	if !local {
		g, err = h.authorize(r.Context(), billing.AuthRequest{
			KeyHash: keyHash, Model: req.Model, Hold: hold, HoldUpTo: upTo, Tokens: tokens, RequestID: requestID, ClientIP: clientAddr(r),
		})
		if errors.Is(err, billing.ErrInsufficientQuota) {
			// What Redis has left may be in this node's lease, taken
			// while the request was on its way.
			if g2, t2, ok, err2 := h.admitLocal(r, keyHash, req.Model, requestID, hold, upTo, tokens); ok && err2 == nil {
				g, ticket, err = g2, t2, nil
			}
		}
	}
	if err != nil {
		h.answerAuthError(w, r, err, req.Model)
		return nil
	}
	if g.Lease == "" && !g.NoHold {
		h.app.redis.leases.Prime(g.User, upTo)
	}
	setRateHeaders(w.Header(), g.Limits)
	return h.forward(w, r, next, g, ticket, req, price, requestID)
}

// forward sends an admitted request upstream through next and settles
// it, whatever the upstream does. It is a function of its own so that its
// deferred calls are compiled inline: Go gives that up in a function with
// as many returns as ServeHTTP has.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, g billing.Grant,
	ticket lease.Ticket, req *meter.Request, price money.Price, requestID string) error {
	if provider, ok := h.aliasOf(req.Model); ok {
		caddyhttp.SetVar(r.Context(), "aitoken.requested_model", req.Model)
		req.Rename(provider)
	}
	h.setIdentity(r, g, req.Model)
	mw := newMeteredWriter(w, r, req, h.OnClientGone == onClientGoneCancel)
	setBody(r, req.Body, &mw.body)
	prepareUpstream(r, mw.identity[:])
	up := r
	if h.OnClientGone == onClientGoneFinish {
		up = mw.detach.start(r, time.Duration(h.ClientGoneTimeout))
		defer mw.detach.release()
		mw.upstream = up.Context()
	}
	if g.Hold > 0 && g.Lease == "" {
		defer h.keepHold(g)()
	}
	start := time.Now()
	finished := false
	defer func() {
		// On a mid-stream upstream failure reverse_proxy panics with
		// http.ErrAbortHandler: settle anyway, and let the panic go on.
		h.finish(r, mw, g, ticket, req, price, start, !finished)
	}()
	err := next.ServeHTTP(mw, up)
	finished = true
	if !mw.wroteHeader && r.Context().Err() != nil {
		// The client left before any answer (on_client_gone cancel, or
		// while reverse_proxy waited for an upstream): not an outage.
		mw.upstreamErr = err
		mw.status = statusClientClosed
		h.log.Debug("client left before the upstream answered", zap.String("request_id", requestID), zap.Error(err))
		return nil
	}
	if !mw.wroteHeader {
		// Nothing came back: the upstream could not be reached, had no
		// healthy host, or timed out. The client gets the 5xx an SDK
		// retries on, in the shape it reads, and the row says why.
		mw.upstreamErr = err
		if err == nil {
			err = errors.New("the upstream handler wrote no response")
		}
		h.log.Error("upstream gave no response", zap.String("request_id", requestID), zap.Error(err))
		e := errUpstream(upstreamStatus(err))
		mw.status = e.Status
		e.write(mw.ResponseWriter)
		return nil
	}
	return err
}

// endpointOf finds the metered endpoint of r's path, matching it as
// Caddy's path matcher does: without regard to letter case, with dot
// segments and doubled slashes cleaned, so no spelling of a metered path
// slips past the meter. clean is the cleaned path (letter case kept),
// lower the same in lower case.
func endpointOf(r *http.Request) (f meter.Format, clean, lower string) {
	clean = caddyhttp.CleanPath(r.URL.Path, true)
	lower = strings.ToLower(clean)
	return meter.FormatForPath(lower), clean, lower
}

// outputLimit is how many output tokens one choice of req may produce:
// its own limit, else reserve_output_tokens; none for embeddings.
func (h *Handler) outputLimit(req *meter.Request) int64 {
	if req.Format == meter.FormatEmbeddings {
		return 0
	}
	if req.MaxOutputTokens > 0 {
		return req.MaxOutputTokens
	}
	return h.ReserveOutputTokens
}

// billedOutputLimit is the most output one choice of req is billed for:
// its own limit, or max_output_tokens when it set none (at least what the
// hold covered).
func (h *Handler) billedOutputLimit(req *meter.Request) int64 {
	if req.Format == meter.FormatEmbeddings {
		return 0
	}
	if req.MaxOutputTokens > 0 {
		return req.MaxOutputTokens
	}
	return max(h.MaxOutputTokens, h.ReserveOutputTokens)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
