package payments

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/stripe/stripe-go/v76"
	checkoutsession "github.com/stripe/stripe-go/v76/checkout/session"
)

// Topup is a top-up to be paid through a Stripe Checkout Session.
type Topup struct {
	// ID is the top-up's ID in the ledger (usagelog.Payment.TopupID); it
	// is the session's idempotency key and is sent back in the webhook's
	// metadata.
	ID string
	// User is the user to credit, sent as client_reference_id.
	User string
	// AmountMinor is the amount in the currency's minor unit (NanosToMinor).
	AmountMinor int64
	// Currency is the ISO code.
	Currency string
	// SuccessURL is where Checkout sends the customer after paying;
	// CancelURL, if set, where it sends one who goes back.
	SuccessURL, CancelURL string
}

// CheckoutSession is a Checkout Session Stripe created.
type CheckoutSession struct {
	// ID is the session's ID (cs_…).
	ID string
	// URL is the Checkout page to send the customer to.
	URL string
	// PaymentIntent is the session's payment intent, when Stripe made one
	// already.
	PaymentIntent string
}

// AmountError is Stripe refusing a Checkout Session for its amount (too
// small or too large for the currency, say).
type AmountError struct {
	// Msg is Stripe's explanation.
	Msg string
	// Err is Stripe's error.
	Err error
}

func (e *AmountError) Error() string { return "the payment provider refused this amount: " + e.Msg }

// Unwrap returns Stripe's error.
func (e *AmountError) Unwrap() error { return e.Err }

// NewCheckoutSession creates the Checkout Session that pays t, through api,
// bounded by ctx. The top-up's ID is the idempotency key, so a retry of the
// same top-up makes no second session. A refusal of the amount is an
// *AmountError; any other failure is Stripe's (or the network's) error.
func NewCheckoutSession(ctx context.Context, api *checkoutsession.Client, t Topup) (CheckoutSession, error) {
	label := FormatMinor(t.AmountMinor, t.Currency) + " " + t.Currency
	params := &stripe.CheckoutSessionParams{
		Mode:              stripe.String(string(stripe.CheckoutSessionModePayment)),
		SuccessURL:        stripe.String(t.SuccessURL),
		ClientReferenceID: stripe.String(t.User),
		LineItems: []*stripe.CheckoutSessionLineItemParams{{
			PriceData: &stripe.CheckoutSessionLineItemPriceDataParams{
				Currency:   stripe.String(strings.ToLower(t.Currency)),
				UnitAmount: stripe.Int64(t.AmountMinor),
				ProductData: &stripe.CheckoutSessionLineItemPriceDataProductDataParams{
					Name: stripe.String("API credit " + label),
				},
			},
			Quantity: stripe.Int64(1),
		}},
		PaymentIntentData: &stripe.CheckoutSessionPaymentIntentDataParams{
			Metadata: map[string]string{"user": t.User, "topup_id": t.ID},
		},
	}
	if t.CancelURL != "" {
		params.CancelURL = stripe.String(t.CancelURL)
	}
	params.AddMetadata("user", t.User)
	params.AddMetadata("topup_id", t.ID)
	params.SetIdempotencyKey("topup-" + t.ID)
	params.Context = ctx
	s, err := api.New(params)
	if err != nil {
		var se *stripe.Error
		// Param names the refused field, e.g.
		// line_items[0][price_data][unit_amount].
		if errors.As(err, &se) && se.HTTPStatusCode == http.StatusBadRequest && strings.Contains(se.Param, "amount") {
			return CheckoutSession{}, &AmountError{Msg: se.Msg, Err: err}
		}
		return CheckoutSession{}, err
	}
	cs := CheckoutSession{ID: s.ID, URL: s.URL}
	if s.PaymentIntent != nil {
		cs.PaymentIntent = s.PaymentIntent.ID
	}
	return cs, nil
}
