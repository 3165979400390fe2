package settle

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// A batch of several scripts (each its own room) writes every record to
// the usage stream exactly once: a room shared by two scripts of one
// pipeline would put one script's records in the other's entry.
func TestBatchOfScriptsWritesEachRecordOnce(t *testing.T) {
	started := withLinger(t, time.Hour)
	_, rdb, _, p, stop := leasedPipeline(t, "u9", 100_000_000)
	ctx := context.Background()
	const n = 3*scriptMax + 10
	var dones []<-chan struct{}
	for seq := int64(2); seq < n+2; seq++ {
		dones = append(dones, later(p, leaseRecord("u9", seq)))
		if seq == 2 {
			waitDone(t, started, "a worker lingering")
		}
	}
	stop()
	for _, d := range dones {
		waitDone(t, d, "settled")
	}
	seen := map[string]int{}
	for _, s := range billing.UsageStreams {
		msgs, err := rdb.XRange(ctx, s, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			raw, _ := m.Values[billing.UsageBatchField].(string)
			if raw == "" {
				raw, _ = m.Values[billing.UsageField].(string)
			}
			for _, line := range strings.Split(raw, "\n") {
				var r struct {
					ID string `json:"request_id"`
				}
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatalf("entry %s: %q: %v", m.ID, line, err)
				}
				seen[r.ID]++
			}
		}
	}
	for seq := int64(1); seq < n+2; seq++ {
		if id := fmt.Sprintf("req_linger_u9_%d", seq); seen[id] != 1 {
			t.Errorf("%s in the stream %d times", id, seen[id])
		}
	}
}
