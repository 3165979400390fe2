package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/payments"
)

func init() {
	caddy.RegisterModule(StripeWebhook{})
}

// StripeWebhook is the Stripe webhook endpoint: it verifies each event's
// signature, applies it exactly once to the SQLite ledger (top-ups credit,
// refunds and disputes debit) and then to the balances in Redis
// (accounting.Books.RecordPayment). It needs the aitoken app with a
// database and a stripe block with webhook_secret.
type StripeWebhook struct {
	app *App
	log *zap.Logger
	cfg *StripeConfig
}

// Limits of the webhook.
const (
	// maxStripeBody bounds an event: Stripe's are under 64 KiB, but some
	// have been seen above 52 KiB, and a rejected one is retried for days.
	maxStripeBody = 1 << 20
	// stripeTolerance is how old a signature may be (replay protection).
	stripeTolerance = 5 * time.Minute
	// stripeTimeout bounds applying one event.
	stripeTimeout = 15 * time.Second
)

// CaddyModule returns the Caddy module information.
func (StripeWebhook) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.aitoken_stripe",
		New: func() caddy.Module { return new(StripeWebhook) },
	}
}

// Provision finds the app and its Stripe settings. Payments the ledger
// recorded but Redis missed (after a crash) are applied by the app's repair
// pass on the ledger node.
func (h *StripeWebhook) Provision(ctx caddy.Context) error {
	h.log = ctx.Logger()
	appIface, err := ctx.AppIfConfigured("aitoken")
	if err != nil {
		return fmt.Errorf("aitoken_stripe needs the aitoken global option: %v", err)
	}
	h.app = appIface.(*App)
	if h.app.ledger == nil {
		return fmt.Errorf("aitoken_stripe needs the aitoken database (the ledger node)")
	}
	h.cfg = h.app.Stripe
	if h.cfg == nil {
		return fmt.Errorf("aitoken_stripe needs a stripe block in the aitoken global option")
	}
	if err := h.cfg.provision(h.app.log); err != nil {
		return err
	}
	if h.cfg.webhookSecret == "" {
		return fmt.Errorf("aitoken_stripe: stripe webhook_secret is required")
	}
	return nil
}

// ServeHTTP receives one Stripe event.
func (h *StripeWebhook) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.app.inflight.begin()
	defer h.app.inflight.end()
	if err := h.app.ledger.start(); err != nil {
		h.log.Error("aitoken ledger not ready", zap.Error(err))
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the ledger is not available; retry later"})
		return nil
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "the Stripe webhook accepts POST only"})
		return nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxStripeBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			// Stripe retries this for days: make it visible.
			h.log.Error("stripe event larger than the webhook accepts; rejected",
				zap.Int64("limit", mbe.Limit), zap.Int64("content_length", r.ContentLength))
			metrics.stripeEvents.WithLabelValues("other", "too_large").Inc()
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "event too large"})
			return nil
		}
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "could not read the request body"})
		return nil
	}
	// Verify the raw bytes before anything reads them. Events are rendered
	// at the endpoint's or account's API version, which need not be
	// stripe-go's: only stable fields are decoded (package payments).
	ev, err := webhook.ConstructEventWithOptions(body, r.Header.Get("Stripe-Signature"), h.cfg.webhookSecret,
		webhook.ConstructEventOptions{Tolerance: stripeTolerance, IgnoreAPIVersionMismatch: true})
	if err != nil {
		h.log.Warn("stripe event refused", zap.String("reason", signatureProblem(err)))
		metrics.stripeEvents.WithLabelValues("other", "bad_signature").Inc()
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid Stripe signature or payload"})
		return nil
	}
	if ev.APIVersion != stripe.APIVersion {
		h.log.Debug("stripe event at another API version; reading stable fields only",
			zap.String("event", ev.ID), zap.String("api_version", ev.APIVersion), zap.String("stripe_go_version", stripe.APIVersion))
	}
	if ev.Data == nil {
		h.log.Warn("stripe event without data; ignored", zap.String("event", ev.ID), zap.String("type", string(ev.Type)))
		metrics.stripeEvents.WithLabelValues(stripeEventType(string(ev.Type)), payments.OutcomeMalformed).Inc()
		writeJSON(w, http.StatusOK, map[string]any{"received": true})
		return nil
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), stripeTimeout)
	defer cancel()
	bev := payments.Event{ID: ev.ID, Type: string(ev.Type), APIVersion: ev.APIVersion, Created: ev.Created, Object: ev.Data.Raw}
	// The ledger records the event, then Redis gets its entries; once the
	// ledger has it, a Redis failure is repaired, not retried.
	res, err := h.app.books().RecordPayment(ctx, bev, payments.Config{Currency: h.app.Currency})
	if err != nil {
		// Nothing was recorded: Stripe retries, and the retry applies it.
		h.log.Error("applying stripe event failed; answering 500 so Stripe retries",
			zap.String("event", ev.ID), zap.String("type", bev.Type), zap.Error(err))
		metrics.stripeEvents.WithLabelValues(stripeEventType(bev.Type), "error").Inc()
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "temporary failure; retry"})
		return nil
	}
	if res.Duplicate {
		h.log.Debug("stripe event already applied", zap.String("event", ev.ID), zap.String("type", bev.Type))
		metrics.stripeEvents.WithLabelValues(stripeEventType(bev.Type), "duplicate").Inc()
		writeJSON(w, http.StatusOK, map[string]any{"received": true, "duplicate": true})
		return nil
	}
	outcome := res.Outcome
	metrics.stripeEvents.WithLabelValues(stripeEventType(bev.Type), outcome).Inc()
	log := h.log.Info
	switch outcome {
	case payments.OutcomeUnapplied:
		// Money was taken that no balance got: someone must refund it.
		h.log.Error("stripe payment recorded as unapplied: credited to nobody; refund it in Stripe",
			zap.String("event", ev.ID), zap.String("type", bev.Type), zap.String("payment", res.Payment),
			zap.String("reason", res.Reason))
		log = nil
	case payments.OutcomeMalformed, payments.OutcomeCurrencyMismatch, payments.OutcomeAlreadyUnapplied:
		log = h.log.Warn
	case payments.OutcomeIgnored:
		log = h.log.Debug
	}
	if log != nil {
		log("stripe event applied", zap.String("event", ev.ID), zap.String("type", bev.Type),
			zap.String("outcome", outcome), zap.String("payment", res.Payment), zap.Int("ledger_entries", res.Entries))
	}
	writeJSON(w, http.StatusOK, map[string]any{"received": true, "outcome": outcome})
	return nil
}

// signatureProblem names why an event was refused, without echoing it.
func signatureProblem(err error) string {
	switch {
	case errors.Is(err, webhook.ErrNotSigned):
		return "no Stripe-Signature header"
	case errors.Is(err, webhook.ErrInvalidHeader):
		return "malformed Stripe-Signature header"
	case errors.Is(err, webhook.ErrTooOld):
		return "signature older than the tolerance (replay?)"
	case errors.Is(err, webhook.ErrNoValidSignature):
		return "no valid signature (wrong webhook_secret, or the body was changed)"
	}
	return "payload is not a Stripe event"
}

// Interface guards
var (
	_ caddy.Provisioner           = (*StripeWebhook)(nil)
	_ caddyhttp.MiddlewareHandler = (*StripeWebhook)(nil)
)
