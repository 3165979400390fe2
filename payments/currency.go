// Package payments holds the rules of Stripe top-ups, refunds and disputes:
// how an event changes a user's balance, how Stripe's minor-unit amounts
// convert to the gateway's nanos, and the Checkout Session a top-up is paid
// through. The rules store through a usagelog.PaymentTx and do no network
// I/O; NewCheckoutSession is its one call to Stripe. The webhook handler in
// caddymodule verifies events and feeds them in through package accounting.
package payments

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// Currencies whose Stripe amounts are not in hundredths
// (https://docs.stripe.com/currencies#zero-decimal). ISK, HUF and TWD are
// sent as two-decimal amounts for backwards compatibility, so they are not
// listed.
var (
	zeroDecimal = map[string]bool{
		"BIF": true, "CLP": true, "DJF": true, "GNF": true, "JPY": true, "KMF": true, "KRW": true,
		"MGA": true, "PYG": true, "RWF": true, "UGX": true, "VND": true, "VUV": true, "XAF": true,
		"XOF": true, "XPF": true,
	}
	threeDecimal = map[string]bool{"BHD": true, "JOD": true, "KWD": true, "OMR": true, "TND": true}
)

// MinorDigits is how many decimal places a Stripe amount in currency has:
// 0 for zero-decimal currencies such as JPY and KRW, 3 for BHD, JOD, KWD,
// OMR and TND, 2 for the rest.
func MinorDigits(currency string) int {
	c := strings.ToUpper(currency)
	switch {
	case zeroDecimal[c]:
		return 0
	case threeDecimal[c]:
		return 3
	}
	return 2
}

// ErrAmount reports an amount that has no exact form in the other unit or
// does not fit.
var ErrAmount = errors.New("amount out of range or not a whole number of the currency's minor unit")

func nanosPerMinor(currency string) int64 {
	n := int64(money.NanosPerUnit)
	for range MinorDigits(currency) {
		n /= 10
	}
	return n
}

// MinorToNanos converts a Stripe amount (minor units of currency) to nanos.
func MinorToNanos(amount int64, currency string) (money.Nanos, error) {
	per := nanosPerMinor(currency)
	if amount > 0 && amount > (1<<63-1)/per || amount < 0 && amount < -(1<<63-1)/per {
		return 0, ErrAmount
	}
	return money.Nanos(amount * per), nil
}

// NanosToMinor converts nanos to a Stripe amount in minor units of currency;
// n must be a whole number of minor units ("20.00" USD, "500" JPY).
func NanosToMinor(n money.Nanos, currency string) (int64, error) {
	per := nanosPerMinor(currency)
	if int64(n)%per != 0 {
		return 0, ErrAmount
	}
	return int64(n) / per, nil
}

// FormatMinor writes a Stripe amount as a decimal in currency units, e.g.
// 2000 USD as "20.00" and 500 JPY as "500".
func FormatMinor(amount int64, currency string) string {
	d := MinorDigits(currency)
	if d == 0 {
		return fmt.Sprint(amount)
	}
	sign := ""
	u := uint64(amount)
	if amount < 0 {
		sign, u = "-", uint64(-amount)
	}
	div := uint64(1)
	for range d {
		div *= 10
	}
	return fmt.Sprintf("%s%d.%0*d", sign, u/div, d, u%div)
}

// Share returns total × part / whole rounded down, exactly: the part of a
// credit that a refund or dispute of part of the payment takes back. part is
// clamped to [0, whole], so Share(t, whole, whole) is t itself.
func Share(total money.Nanos, part, whole int64) money.Nanos {
	if total <= 0 || part <= 0 || whole <= 0 {
		return 0
	}
	if part >= whole {
		return total
	}
	hi, lo := bits.Mul64(uint64(total), uint64(part))
	q, _ := bits.Div64(hi, lo, uint64(whole)) // hi < whole because part < whole
	return money.Nanos(q)
}
