package usagelog

import (
	"context"
	"database/sql"
	"fmt"
	"math/big"
	"strings"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// Amounts are added up so that no sum can fail. SQLite's SUM stops with
// "integer overflow" past int64, and rows stored before amounts were
// bounded (a credit of 9,000,000,000 units, say) may hold anything an
// int64 does. So each amount x is summed in two parts, SUM(x / 2³¹) and
// SUM(x % 2³¹) (SQLite truncates towards zero, so x = hi·2³¹ + lo): each
// part of a row is below 2³² in magnitude, and neither SUM can overflow
// before 2³¹ rows. Go puts the two together exactly.

// splitSQL is SUM's two parts over the expression x, as two columns.
func splitSQL(x string) string {
	return `COALESCE(SUM(` + x + ` / 2147483648), 0), COALESCE(SUM(` + x + ` % 2147483648), 0)`
}

// wide is an exact sum hi·2³¹ + lo, as splitSQL's columns give it.
type wide struct{ hi, lo int64 }

// small reports whether w's parts are small enough for int64 arithmetic
// on two of them: |hi| < 2³⁰ and |lo| < 2⁶⁰.
func (w wide) small() bool {
	return w.hi > -1<<30 && w.hi < 1<<30 && w.lo > -1<<60 && w.lo < 1<<60
}

func (w wide) big() *big.Int {
	b := big.NewInt(w.hi)
	b.Lsh(b, 31)
	return b.Add(b, big.NewInt(w.lo))
}

// Amount is a sum of stored amounts (a balance), read whatever the rows
// hold: within ±money.MaxNanos it is exact; past it, Nanos is clamped to
// the range and Exact tells the true sum.
type Amount struct {
	// Nanos is the sum, clamped to ±money.MaxNanos.
	Nanos money.Nanos
	// Exact is the sum as a decimal ("9000000000.000000000") when it lies
	// outside ±money.MaxNanos; "" when Nanos is exact.
	Exact string
}

// OutOfRange reports whether the sum lies outside ±money.MaxNanos.
func (a Amount) OutOfRange() bool { return a.Exact != "" }

// difference returns plus − minus.
func difference(plus, minus wide) Amount {
	if plus.small() && minus.small() {
		// |hi| < 2³¹ after the subtraction, so the shift stays below
		// 2⁶², and |lo| < 2⁶¹: no overflow.
		n := money.Nanos((plus.hi-minus.hi)<<31 + (plus.lo - minus.lo))
		if n.InRange() {
			return Amount{Nanos: n}
		}
	}
	b := plus.big()
	b.Sub(b, minus.big())
	if b.IsInt64() && money.Nanos(b.Int64()).InRange() {
		return Amount{Nanos: money.Nanos(b.Int64())}
	}
	a := Amount{Nanos: money.MaxNanos, Exact: bigDecimal(b)}
	if b.Sign() < 0 {
		a.Nanos = -money.MaxNanos
	}
	return a
}

// saturated returns w as a Nanos limited to the int64 range: for totals
// that are not balances (a usage summary may exceed MaxNanos).
func saturated(w wide) money.Nanos {
	b := w.big()
	switch {
	case b.IsInt64():
		return money.Nanos(b.Int64())
	case b.Sign() < 0:
		return money.Nanos(-1 << 63)
	}
	return money.Nanos(1<<63 - 1)
}

// bigDecimal writes b nanos as money.Nanos.String does.
func bigDecimal(b *big.Int) string {
	digits := new(big.Int).Abs(b).String()
	if len(digits) < 10 {
		digits = strings.Repeat("0", 10-len(digits)) + digits
	}
	sign := ""
	if b.Sign() < 0 {
		sign = "-"
	}
	return sign + digits[:len(digits)-9] + "." + digits[len(digits)-9:]
}

// balanceSQL reads a user's status (NULL when there is no such user) and
// the two parts of the sums of its ledger entries and of its usage costs,
// in one statement (one snapshot: the retention job moves cost from usage
// to the ledger in one transaction).
var balanceSQL = `SELECT (SELECT status FROM users WHERE id = ?1), l.*, u.* FROM
	(SELECT ` + splitSQL("amount") + ` FROM ledger WHERE user_id = ?1) l,
	(SELECT ` + splitSQL("cost") + ` FROM usage WHERE user_id = ?1) u`

// ledgerBalance returns the status of user ("" when unknown) and its
// ledger balance: ledger entries minus usage cost.
func ledgerBalance(ctx context.Context, q querier, user string) (string, Amount, error) {
	var (
		status      sql.NullString
		plus, minus wide
	)
	if err := q.QueryRowContext(ctx, balanceSQL, user).
		Scan(&status, &plus.hi, &plus.lo, &minus.hi, &minus.lo); err != nil {
		return "", Amount{}, fmt.Errorf("ledger balance: %w", err)
	}
	return status.String, difference(plus, minus), nil
}

// AccountBalance is one user's ledger balance.
type AccountBalance struct {
	User    string
	Balance Amount
}

// AccountBalances returns the ledger balance of every user that is not
// deleted, ordered by user ID. It never fails on what the rows hold: a
// balance outside ±money.MaxNanos (stored before amounts were bounded)
// comes back clamped, with its exact value, for reconcile to report.
func (s *Store) AccountBalances(ctx context.Context) ([]AccountBalance, error) {
	rows, err := s.rd.QueryContext(ctx, `
		SELECT u.id, COALESCE(l.hi, 0), COALESCE(l.lo, 0), COALESCE(g.hi, 0), COALESCE(g.lo, 0)
		FROM users u
		LEFT JOIN (SELECT user_id, SUM(amount / 2147483648) AS hi, SUM(amount % 2147483648) AS lo
		           FROM ledger GROUP BY user_id) l ON l.user_id = u.id
		LEFT JOIN (SELECT user_id, SUM(cost / 2147483648) AS hi, SUM(cost % 2147483648) AS lo
		           FROM usage GROUP BY user_id) g ON g.user_id = u.id
		WHERE u.status != 'deleted'
		ORDER BY u.id`)
	if err != nil {
		return nil, fmt.Errorf("balances: %w", err)
	}
	defer rows.Close()
	var out []AccountBalance
	for rows.Next() {
		var (
			b           AccountBalance
			plus, minus wide
		)
		if err := rows.Scan(&b.User, &plus.hi, &plus.lo, &minus.hi, &minus.lo); err != nil {
			return nil, fmt.Errorf("balances: %w", err)
		}
		b.Balance = difference(plus, minus)
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("balances: %w", err)
	}
	return out, nil
}
