package billing

import (
	"errors"
	"fmt"
	"time"
)

// ErrRateLimited matches every *RateLimitError.
var ErrRateLimited = errors.New("rate limit exceeded")

// RateLimitError refuses a request over its key's per-minute limit.
type RateLimitError struct {
	// Kind is "requests" or "tokens".
	Kind string
	// Limit is the key's limit per minute.
	Limit int64
	// Reset is when the current window ends.
	Reset time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("rate limit exceeded: %d %s per minute", e.Limit, e.Kind)
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

// RateState is the state of a key's windows after an admitted request, for
// OpenAI's x-ratelimit-* headers. A zero limit means unlimited.
type RateState struct {
	RequestLimit, RequestsLeft int64
	TokenLimit, TokensLeft     int64
	// Reset is when the current one-minute window ends.
	Reset time.Duration
}

func rateState(rpm, tpm, rused, tused, resetMS int64) RateState {
	return RateState{
		RequestLimit: rpm, RequestsLeft: max(rpm-rused, 0),
		TokenLimit: tpm, TokensLeft: max(tpm-tused, 0),
		Reset: time.Duration(resetMS) * time.Millisecond,
	}
}
