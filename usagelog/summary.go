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

// Summary groupings.
const (
	// GroupByModel sums usage per model.
	GroupByModel = "model"
	// GroupByDay sums usage per UTC day.
	GroupByDay = "day"
)

// SummaryQuery selects the usage rows a summary adds up. Empty fields do not
// filter.
type SummaryQuery struct {
	User string
	// From is inclusive, To exclusive, as in UsageQuery.
	From, To time.Time
	// GroupBy is "" (one total), GroupByModel or GroupByDay.
	GroupBy string
}

// UsageTotals is a sum of usage rows. Cost stops at the int64 limits
// rather than failing (rows stored before amounts were bounded).
type UsageTotals struct {
	// Model is set when grouped by model.
	Model string `json:"model,omitempty"`
	// Day is the UTC date (2026-01-02) when grouped by day.
	Day               string      `json:"day,omitempty"`
	Requests          int64       `json:"requests"`
	InputTokens       int64       `json:"input_tokens"`
	CachedInputTokens int64       `json:"cached_input_tokens"`
	CacheWriteTokens  int64       `json:"cache_write_tokens"`
	OutputTokens      int64       `json:"output_tokens"`
	ReasoningTokens   int64       `json:"reasoning_tokens"`
	Cost              money.Nanos `json:"cost"`
}

func (t *UsageTotals) add(o UsageTotals) {
	t.Requests += o.Requests
	t.InputTokens += o.InputTokens
	t.CachedInputTokens += o.CachedInputTokens
	t.CacheWriteTokens += o.CacheWriteTokens
	t.OutputTokens += o.OutputTokens
	t.ReasoningTokens += o.ReasoningTokens
	t.Cost = addSaturated(t.Cost, o.Cost)
}

// addSaturated adds two totals, stopping at the int64 limits.
func addSaturated(a, b money.Nanos) money.Nanos {
	s := a + b
	switch {
	case b > 0 && s < a:
		return money.Nanos(1<<63 - 1)
	case b < 0 && s > a:
		return money.Nanos(-1 << 63)
	}
	return s
}

const nanosPerDay = int64(24 * time.Hour)

// SummarizeUsage adds up the usage rows matching q: per group (ordered by
// model name, or by day), and in total. With no grouping Groups is empty.
func (s *Store) SummarizeUsage(ctx context.Context, q SummaryQuery) (groups []UsageTotals, total UsageTotals, err error) {
	var key string
	switch q.GroupBy {
	case "":
		key = `''`
	case GroupByModel:
		key = `model`
	case GroupByDay:
		// Times are non-negative (validate refuses years before 1970), so
		// integer division is the UTC day.
		key = fmt.Sprintf(`time / %d`, nanosPerDay)
	default:
		return nil, total, fmt.Errorf("group by %q: %w", q.GroupBy, ErrInvalid)
	}
	var (
		where []string
		args  []any
	)
	if q.User != "" {
		where, args = append(where, `user_id = ?`), append(args, q.User)
	}
	if !q.From.IsZero() {
		where, args = append(where, `time >= ?`), append(args, unixNanos(q.From))
	}
	if !q.To.IsZero() {
		where, args = append(where, `time < ?`), append(args, unixNanos(q.To))
	}
	query := `SELECT ` + key + ` AS g, COUNT(*), SUM(input_tokens), SUM(cached_input_tokens),
		SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), ` + splitSQL("cost") + ` FROM usage`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, ` AND `)
	}
	query += ` GROUP BY g ORDER BY g`
	rows, err := s.rd.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, total, fmt.Errorf("summarize usage: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			g    any
			t    UsageTotals
			cost wide
		)
		if err := rows.Scan(&g, &t.Requests, &t.InputTokens, &t.CachedInputTokens, &t.CacheWriteTokens,
			&t.OutputTokens, &t.ReasoningTokens, &cost.hi, &cost.lo); err != nil {
			return nil, total, fmt.Errorf("summarize usage: %w", err)
		}
		t.Cost = saturated(cost)
		total.add(t)
		switch q.GroupBy {
		case GroupByModel:
			t.Model = asString(g)
		case GroupByDay:
			day, _ := g.(int64)
			t.Day = time.Unix(0, day*nanosPerDay).UTC().Format(time.DateOnly)
		default:
			continue
		}
		groups = append(groups, t)
	}
	if err := rows.Err(); err != nil {
		return nil, total, fmt.Errorf("summarize usage: %w", err)
	}
	return groups, total, nil
}

func asString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return fmt.Sprint(v)
}

// PaymentQuery selects a page of payments.
type PaymentQuery struct {
	// User keeps the user's payments; empty: everyone's.
	User string
	// Limit is the page size: 0 means 100, at most 1000.
	Limit int
	// Before is a cursor: the ID of the last payment of the previous page.
	// Only older payments (by creation time, then ID) are returned. An
	// unknown ID gives ErrNotFound.
	Before int64
}

// PaymentsPage returns payments matching q, newest first.
func (s *Store) PaymentsPage(ctx context.Context, q PaymentQuery) ([]Payment, error) {
	var (
		where []string
		args  []any
	)
	if q.User != "" {
		where, args = append(where, `user_id = ?`), append(args, q.User)
	}
	if q.Before != 0 {
		var created int64
		err := s.rd.QueryRowContext(ctx, `SELECT created_at FROM payments WHERE id = ?`, q.Before).Scan(&created)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("payment cursor %d: %w", q.Before, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("list payments: %w", err)
		}
		where, args = append(where, `(created_at, id) < (?, ?)`), append(args, created, q.Before)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, MaxUsageLimit)
	query := `SELECT ` + paymentCols + ` FROM payments`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, ` AND `)
	}
	query += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	return queryPayments(ctx, s.rd, query, append(args, limit)...)
}

// GetPayment returns the payment with row ID id, or ErrNotFound.
func (s *Store) GetPayment(ctx context.Context, id int64) (Payment, error) {
	p, err := scanPayment(s.rd.QueryRowContext(ctx, `SELECT `+paymentCols+` FROM payments WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Payment{}, fmt.Errorf("payment %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Payment{}, fmt.Errorf("get payment: %w", err)
	}
	return p, nil
}
