package usagelog

import (
	"context"
	"strings"
	"testing"
)

// TestUsageQueriesUseIndexes checks, with EXPLAIN QUERY PLAN, that the
// queries over the usage table that can meet millions of rows find them
// through an index, and that listings come out of it in time order, not
// sorted whole (only rows of the same time are, by request_id). Every index on usage costs insert throughput, so the set is kept
// to what these queries need: the request_id key (INSERT OR IGNORE, the
// listing cursor), (time) for listings across users and the retention
// purge, (user_id, time) for everything per user. The statements mirror
// ListUsage, ExportUser, Purge, Spend, DailySpend and the balances.
func TestUsageQueriesUseIndexes(t *testing.T) {
	s := openStore(t)
	for _, tc := range []struct {
		name, query string
		sorted      bool // false: must not sort all its rows
	}{
		{"list, all users", `SELECT ` + usageColumns + ` FROM usage ORDER BY time DESC, request_id DESC LIMIT 100`, false},
		{"list, time range", `SELECT ` + usageColumns + ` FROM usage WHERE time >= 1 AND time < 2
			ORDER BY time DESC, request_id DESC LIMIT 100`, false},
		{"list, one user", `SELECT ` + usageColumns + ` FROM usage WHERE user_id = 'u'
			ORDER BY time DESC, request_id DESC LIMIT 100`, false},
		{"list, one user, page", `SELECT ` + usageColumns + ` FROM usage WHERE user_id = 'u' AND (time, request_id) < (5, 'r')
			ORDER BY time DESC, request_id DESC LIMIT 100`, false},
		{"list cursor", `SELECT time FROM usage WHERE request_id = 'r' AND ('u' = '' OR user_id = 'u')`, true},
		{"export", `SELECT ` + usageColumns + ` FROM usage WHERE user_id = 'u' ORDER BY time, request_id`, false},
		{"purge bound", `SELECT time FROM usage WHERE time < 5 ORDER BY time LIMIT 1 OFFSET 9999`, true},
		{"purge sums", `SELECT COUNT(*), SUM(cost) FROM usage WHERE time < 5`, true},
		{"purge", `DELETE FROM usage WHERE time < 5`, true},
		{"spend", `SELECT SUM(cost) FROM usage WHERE user_id = 'u' AND time >= 1 AND time < 2`, true},
		{"balance", `SELECT SUM(cost / 2147483648), SUM(cost % 2147483648) FROM usage WHERE user_id = 'u'`, true},
		{"balances", `SELECT user_id, SUM(cost) FROM usage GROUP BY user_id`, true},
	} {
		rows, err := s.wr.QueryContext(context.Background(), `EXPLAIN QUERY PLAN `+tc.query)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		for _, step := range plan {
			if strings.Contains(step, "usage") && !strings.Contains(step, "USING") {
				t.Errorf("%s reads usage without an index: %q", tc.name, plan)
			}
			if !tc.sorted && strings.Contains(step, "TEMP B-TREE FOR ORDER BY") {
				t.Errorf("%s sorts its rows: %q", tc.name, plan)
			}
		}
	}
}
