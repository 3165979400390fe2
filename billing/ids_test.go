package billing

import (
	"strings"
	"testing"
	"time"
)

func TestRequestIDsSortByTimeAndAreUnique(t *testing.T) {
	base := time.UnixMilli(1_795_000_000_000)
	seen := map[string]bool{}
	prev := ""
	for i := range 2000 {
		now := base.Add(time.Duration(i/100) * time.Millisecond)
		id := requestID(now)
		if len(id) != 32 || !strings.HasPrefix(id, "req_") {
			t.Fatalf("id %q: want req_ and 28 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
		if i%100 == 0 && prev != "" && id[:16] <= prev[:16] {
			t.Fatalf("%q (a later millisecond) does not sort after %q", id, prev)
		}
		prev = id
	}
	if id := NewRequestID(); id[:16] <= requestID(base)[:16] {
		t.Fatalf("NewRequestID %q does not carry the current time", id)
	}
}
