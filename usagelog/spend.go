package usagelog

import (
	"context"
	"fmt"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// DaySpend is what one user spent on one model in one UTC day.
type DaySpend struct {
	// Day is the day's start, in UTC.
	Day time.Time
	// Model is the model the requests asked for.
	Model string
	// Cost is the sum of the day's usage costs for Model.
	Cost money.Nanos
	// Requests is the number of usage rows summed.
	Requests int64
}

// DailySpend returns what user spent per UTC day and model on the usage
// rows stored in [from, to), ordered by day then model. It reads the rows
// through the (user_id, time) index.
func (s *Store) DailySpend(ctx context.Context, user string, from, to time.Time) ([]DaySpend, error) {
	rows, err := s.rd.QueryContext(ctx, `SELECT time / ?1 AS day, model, COUNT(*), `+splitSQL("cost")+`
		FROM usage WHERE user_id = ?2 AND time >= ?3 AND time < ?4
		GROUP BY day, model ORDER BY day, model`,
		nanosPerDay, user, unixNanos(from), unixNanos(to))
	if err != nil {
		return nil, fmt.Errorf("daily spend: %w", err)
	}
	defer rows.Close()
	var out []DaySpend
	for rows.Next() {
		var (
			d   DaySpend
			day int64
			w   wide
		)
		if err := rows.Scan(&day, &d.Model, &d.Requests, &w.hi, &w.lo); err != nil {
			return nil, fmt.Errorf("daily spend: %w", err)
		}
		d.Day = fromNanos(day * nanosPerDay)
		d.Cost = saturated(w)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("daily spend: %w", err)
	}
	return out, nil
}

// Spend returns the sum of the costs of user's usage rows in [from, to).
func (s *Store) Spend(ctx context.Context, user string, from, to time.Time) (money.Nanos, error) {
	var w wide
	if err := s.rd.QueryRowContext(ctx, `SELECT `+splitSQL("cost")+`
		FROM usage WHERE user_id = ? AND time >= ? AND time < ?`,
		user, unixNanos(from), unixNanos(to)).Scan(&w.hi, &w.lo); err != nil {
		return 0, fmt.Errorf("spend: %w", err)
	}
	return saturated(w), nil
}
