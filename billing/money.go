package billing

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

// ErrBadAmount reports a decimal amount that cannot be read exactly.
var ErrBadAmount = errors.New("amount must be a decimal string with at most 9 places, like \"10.50\"")

// ParseNanos reads a decimal string such as "10.50" or "-0.000000001"
// into nanos exactly. More than nine decimal places, exponents, empty
// strings and values beyond ±9,223,372,036 units are refused.
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
	if err != nil || w > 9_223_372_035 {
		return 0, ErrBadAmount
	}
	var f uint64
	if frac != "" {
		f, _ = strconv.ParseUint(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	}
	n := Nanos(w*NanosPerUnit + f)
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
