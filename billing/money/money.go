// Package money is the arithmetic of the gateway's money, with no I/O:
// amounts as integer nanos (Nanos), their decimal form at the edges, the
// bounds every stored amount is checked against, and prices per million
// tokens (Price, PriceTable) with the exact cost of a request's Tokens.
package money

import (
	"errors"
	"strconv"
	"strings"
)

// NanosPerUnit is how many nanos make one unit of the currency.
const NanosPerUnit = 1_000_000_000

// Nanos is an amount of money in nanos (10⁻⁹ of the currency unit). It is
// written to JSON as a decimal string with nine places ("12.500000000") and
// read from a decimal string ("12.5", "-3", "0.000000001"), never a float.
type Nanos int64

// MaxNanos bounds every amount the gateway handles: a credit or debit, a
// price, a cost, a hold and a balance all lie in [−MaxNanos, MaxNanos].
// It is 2⁵³ − 1 nanos (9,007,199.254740991 units), the range in which the
// Redis Lua scripts, whose numbers are doubles, compare amounts exactly;
// it also keeps a sum of a few bounded amounts far from int64 overflow.
const MaxNanos Nanos = 1<<53 - 1

// ErrAmountRange reports an amount, or the balance it would make, outside
// [−MaxNanos, MaxNanos]. Nothing is written when it is returned.
var ErrAmountRange = errors.New("amount out of range: the largest balance is 9007199.254740991")

// ErrBadAmount reports a decimal amount that cannot be read exactly.
var ErrBadAmount = errors.New("amount must be a decimal string with at most 9 places, like \"10.50\"")

// InRange reports whether |n| ≤ MaxNanos.
func (n Nanos) InRange() bool { return n >= -MaxNanos && n <= MaxNanos }

// CheckAmount returns ErrAmountRange unless |n| ≤ MaxNanos.
func CheckAmount(n Nanos) error {
	if !n.InRange() {
		return ErrAmountRange
	}
	return nil
}

// CheckCredit checks that adding amount to balance is allowed: amount is in
// range and does not move the balance out of range. A balance already out
// of range (stored before amounts were bounded) may still be moved towards
// the range, so an operator can repair it. It returns the new balance.
func CheckCredit(balance, amount Nanos) (Nanos, error) {
	if !amount.InRange() {
		return 0, ErrAmountRange
	}
	// |amount| ≤ 2⁵³: the sum overflows int64 only for a balance within
	// 2⁵³ of the int64 limits, which saturates here.
	next := balance + amount
	switch {
	case amount > 0 && (next < balance || next > MaxNanos):
		return 0, ErrAmountRange
	case amount < 0 && (next > balance || next < -MaxNanos):
		return 0, ErrAmountRange
	}
	return next, nil
}

// ClampNanos returns n limited to [−MaxNanos, MaxNanos].
func ClampNanos(n Nanos) Nanos {
	return min(max(n, -MaxNanos), MaxNanos)
}

// ParseNanos reads a decimal string such as "10.50" or "-0.000000001"
// into nanos exactly. More than nine decimal places, exponents and empty
// strings are refused with ErrBadAmount; values beyond ±MaxNanos
// (9,007,199.254740991 units) with ErrAmountRange.
func ParseNanos(s string) (Nanos, error) {
	s = strings.TrimSpace(s)
	neg := false
	switch {
	case strings.HasPrefix(s, "-"):
		neg, s = true, s[1:]
	case strings.HasPrefix(s, "+"):
		s = s[1:]
	}
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" && frac == "" || len(frac) > 9 || (hasDot && frac == "" && whole == "") {
		return 0, ErrBadAmount
	}
	if whole == "" {
		whole = "0"
	}
	if !digitsOnly(whole) || !digitsOnly(frac) {
		return 0, ErrBadAmount
	}
	w, err := strconv.ParseUint(whole, 10, 64)
	if err != nil || w > uint64(MaxNanos/NanosPerUnit) {
		return 0, ErrAmountRange
	}
	var f uint64
	if frac != "" {
		f, _ = strconv.ParseUint(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	}
	n := Nanos(w*NanosPerUnit + f)
	if n > MaxNanos {
		return 0, ErrAmountRange
	}
	if neg {
		n = -n
	}
	return n, nil
}

func digitsOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String formats n as a decimal with nine places, e.g. "-0.250000000".
func (n Nanos) String() string {
	var buf [24]byte
	return string(n.AppendDecimal(buf[:0]))
}

// AppendDecimal appends n to b as String writes it, without allocating.
func (n Nanos) AppendDecimal(b []byte) []byte {
	u := uint64(n)
	if n < 0 {
		b, u = append(b, '-'), uint64(-n)
	}
	b = strconv.AppendUint(b, u/NanosPerUnit, 10)
	var frac [10]byte
	frac[0] = '.'
	for i, f := 9, u%NanosPerUnit; i > 0; i-- {
		frac[i] = byte('0' + f%10)
		f /= 10
	}
	return append(b, frac[:]...)
}

// MarshalJSON writes n as a JSON string.
func (n Nanos) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, n.String()), nil
}

// UnmarshalJSON reads a JSON string (or, leniently, a bare integer-free
// decimal literal) holding a decimal amount.
func (n *Nanos) UnmarshalJSON(b []byte) error {
	s := string(b)
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	v, err := ParseNanos(s)
	if err != nil {
		return err
	}
	*n = v
	return nil
}
