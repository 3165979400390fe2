package usagelog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// Record is one metered request: what was used, what it cost, and how it
// went. Its JSON is the usage record the admin API returns, and also what producers put
// in the usage stream (FlusherConfig.Field). Content is never part of it.
type Record struct {
	// RequestID is unique per request; the usage table is keyed by it, so a
	// record delivered twice is stored once.
	RequestID string `json:"request_id"`
	// Time is when the request started. Producers set it in UTC
	// (time.Now().UTC()) so that the JSON reads "…Z"; records read from
	// the Store are always in UTC.
	Time time.Time `json:"time"`
	// User is the ID of the user billed.
	User string `json:"user"`
	// KeyID is the ID of the API key used.
	KeyID string `json:"key_id"`
	// Model is the model the request asked for.
	Model string `json:"model"`
	// Endpoint is the metered path, such as "/v1/chat/completions".
	Endpoint string `json:"endpoint"`
	// Stream is true for an SSE response.
	Stream bool `json:"stream"`
	// Status is the HTTP status sent to the client.
	Status int `json:"status"`
	// Outcome says how the request ended, such as "ok" or "client_gone".
	Outcome string `json:"outcome"`
	// InputTokens is the number of prompt tokens, cached ones included.
	InputTokens int64 `json:"input_tokens"`
	// CachedInputTokens is the part of InputTokens read from the
	// provider's prompt cache.
	CachedInputTokens int64 `json:"cached_input_tokens"`
	// CacheWriteTokens is the number of tokens written to the provider's
	// prompt cache (Anthropic).
	CacheWriteTokens int64 `json:"cache_write_tokens,omitempty"`
	// OutputTokens is the number of completion tokens, reasoning included.
	OutputTokens int64 `json:"output_tokens"`
	// ReasoningTokens is the part of OutputTokens spent on reasoning.
	ReasoningTokens int64 `json:"reasoning_tokens"`
	// Cost is what the user was charged.
	Cost money.Nanos `json:"cost"`
	// Currency is the currency of Cost, such as "USD".
	Currency string `json:"currency"`
	// Estimated is true when the tokens were estimated because the
	// upstream sent no usage report.
	Estimated bool `json:"estimated"`
	// Clamped is true when the upstream's usage report claimed more tokens
	// than the request could produce, and the counts were cut down to what
	// it could. Omitted from the JSON when false.
	Clamped bool `json:"usage_clamped,omitempty"`
	// DurationMS is the time from request to last byte, in milliseconds.
	DurationMS int64 `json:"duration_ms"`
	// TTFTMS is the time to the first response byte, in milliseconds.
	TTFTMS int64 `json:"ttft_ms"`
	// ClientIP is the client's address; empty when log_client_ip is off,
	// and stored empty for a user who opted out (see noIPUsers).
	ClientIP string `json:"client_ip"`
}

// validate refuses records that cannot be stored meaningfully. The flusher
// sends such records to usage_rejects instead of inserting them.
func (r *Record) validate() error {
	switch {
	case r.RequestID == "":
		return fmt.Errorf("record without request_id: %w", ErrInvalid)
	case r.User == "":
		return fmt.Errorf("record without user: %w", ErrInvalid)
	case r.Time.IsZero():
		return fmt.Errorf("record without time: %w", ErrInvalid)
	case r.Time.Year() < 1970 || r.Time.Year() > 2200: // beyond int64 Unix nanoseconds soon after
		return fmt.Errorf("record time out of range: %w", ErrInvalid)
	case r.Cost < 0 || r.Cost > money.MaxNanos:
		// No settlement debits this (money.Price.Cost and holds are
		// bounded): the record is not the gateway's. Kept in usage_rejects.
		return fmt.Errorf("record cost %s out of range: %w", r.Cost, ErrInvalid)
	}
	return nil
}

const usageColumns = `request_id, time, user_id, key_id, model, endpoint, stream, status, outcome,
	input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
	cost, currency, estimated, duration_ms, ttft_ms, client_ip, usage_clamped`

// UsageQuery selects usage records. Empty fields do not filter.
type UsageQuery struct {
	// User keeps records of this user ID.
	User string
	// Key keeps records of this key ID.
	Key string
	// Model keeps records of this exact model name.
	Model string
	// From keeps records at or after this time. Zero: no lower bound.
	From time.Time
	// To keeps records before this time (exclusive). Zero: no upper bound.
	To time.Time
	// Limit is the largest number of records returned. Default 100, max 1000.
	Limit int
	// Before is a cursor: the request_id of the last record of the previous
	// page. Only records older than it (by time, then request_id) are
	// returned. An unknown request_id (or, with User, one of another
	// user) gives ErrNotFound.
	Before string
}

// Limits of UsageQuery.Limit.
const (
	// DefaultUsageLimit is the page size when UsageQuery.Limit is 0.
	DefaultUsageLimit = 100
	// MaxUsageLimit is the largest page ListUsage returns.
	MaxUsageLimit = 1000
)

// ListUsage returns the records matching q, newest first (ties broken by
// request_id, descending), so that Before pages through them stably.
func (s *Store) ListUsage(ctx context.Context, q UsageQuery) ([]Record, error) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, a ...any) {
		where = append(where, cond)
		args = append(args, a...)
	}
	if q.User != "" {
		add("user_id = ?", q.User)
	}
	if q.Key != "" {
		add("key_id = ?", q.Key)
		// There is no index by key (it would cost insert speed); a key
		// belongs to one user, so its rows are found through the user index.
		if q.User == "" {
			var owner string
			err := s.rd.QueryRowContext(ctx, `SELECT user_id FROM keys WHERE id = ?`, q.Key).Scan(&owner)
			switch {
			case err == nil:
				add("user_id = ?", owner)
			case !errors.Is(err, sql.ErrNoRows): // unknown key: scan by time instead
				return nil, fmt.Errorf("list usage: %w", err)
			}
		}
	}
	if q.Model != "" {
		add("model = ?", q.Model)
	}
	if !q.From.IsZero() {
		add("time >= ?", unixNanos(q.From))
	}
	if !q.To.IsZero() {
		add("time < ?", unixNanos(q.To))
	}
	if q.Before != "" {
		var t int64
		// With a user, the cursor must be one of the user's rows: another
		// user's request_id is unknown here, and tells nothing of its time.
		err := s.rd.QueryRowContext(ctx, `SELECT time FROM usage WHERE request_id = ?1 AND (?2 = '' OR user_id = ?2)`,
			q.Before, q.User).Scan(&t)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("usage cursor %s: %w", q.Before, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("list usage: %w", err)
		}
		add("(time, request_id) < (?, ?)", t, q.Before)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultUsageLimit
	}
	limit = min(limit, MaxUsageLimit)
	query := `SELECT ` + usageColumns + ` FROM usage`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, ` AND `)
	}
	query += ` ORDER BY time DESC, request_id DESC LIMIT ?`
	args = append(args, limit)

	rows, err := s.rd.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list usage: %w", err)
	}
	defer rows.Close()
	var recs []Record
	for rows.Next() {
		r, err := scanUsage(rows)
		if err != nil {
			return nil, fmt.Errorf("list usage: %w", err)
		}
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list usage: %w", err)
	}
	return recs, nil
}
