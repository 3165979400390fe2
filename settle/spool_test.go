package settle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func entry(i int) spoolEntry {
	return spoolEntry{ID: fmt.Sprintf("e%04d", i), Payload: json.RawMessage(fmt.Sprintf(`{"n": %d, "s": "<&>"}`, i))}
}

func ids(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, entry(i).ID)
	}
	return out
}

func openSpoolT(t testing.TB, path string) *spool {
	t.Helper()
	s, err := openSpool(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func appendT(t testing.TB, s *spool, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := s.Append(entry(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// drain replays everything and returns the IDs applied, in order.
func drain(t testing.TB, s *spool) []string {
	t.Helper()
	var got []string
	n, err := s.Replay(context.Background(), func(_ context.Context, e spoolEntry) error {
		got = append(got, e.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(got) {
		t.Fatalf("Replay returned %d, applied %d", n, len(got))
	}
	if s.Len() != 0 {
		t.Fatalf("Len after drain = %d", s.Len())
	}
	return got
}

func size(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestSpoolAppendLenReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "spool.jsonl")
	s := openSpoolT(t, path)
	appendT(t, s, 0, 10)
	if s.Len() != 10 {
		t.Fatalf("Len = %d, want 10", s.Len())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(entry(99)); !errors.Is(err, errSpoolClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	for _, p := range []string{path, filepath.Dir(path)} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]os.FileMode{true: 0o700, false: 0o600}[st.IsDir()]; st.Mode().Perm()&^want != 0 {
			t.Errorf("%s mode %v, want at most %v", p, st.Mode().Perm(), want)
		}
	}

	s = openSpoolT(t, path)
	if s.Len() != 10 {
		t.Fatalf("Len after reopen = %d, want 10", s.Len())
	}
	var payloads []string
	s.Replay(context.Background(), func(_ context.Context, e spoolEntry) error {
		payloads = append(payloads, string(e.Payload))
		return nil
	})
	if want := `{"n":3,"s":"<&>"}`; payloads[3] != want {
		t.Errorf("payload = %s, want %s", payloads[3], want)
	}
	s.Close()

	s = openSpoolT(t, path)
	if s.Len() != 0 || size(t, path) != 0 {
		t.Fatalf("after replay and reopen: Len %d, size %d", s.Len(), size(t, path))
	}
}

func TestSpoolSharedOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool")
	a, b := openSpoolT(t, path), openSpoolT(t, path)
	appendT(t, a, 0, 2)
	appendT(t, b, 2, 4)
	if a.Len() != 4 || b.Len() != 4 {
		t.Fatalf("Len = %d, %d, want 4", a.Len(), b.Len())
	}
	a.Close()
	appendT(t, b, 4, 5)
	if got := drain(t, b); !slices.Equal(got, ids(0, 5)) {
		t.Fatalf("got %v", got)
	}
}

func TestSpoolTornLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool")
	s := openSpoolT(t, path)
	appendT(t, s, 0, 3)
	s.Close()
	whole := size(t, path)

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"id":"torn","p":{"n":`)
	f.Close()

	s = openSpoolT(t, path)
	if s.Len() != 3 {
		t.Fatalf("Len = %d, want 3", s.Len())
	}
	if got := size(t, path); got != whole {
		t.Fatalf("size = %d, want torn line cut to %d", got, whole)
	}
	appendT(t, s, 3, 4)
	if got := drain(t, s); !slices.Equal(got, ids(0, 4)) {
		t.Fatalf("got %v", got)
	}
}

func TestSpoolCorruptLineQuarantined(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool")
	lines := []string{`{"id":"a","p":1}`, `not json`, ``, `{"id":"b","p":2}`}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openSpoolT(t, path)
	if s.Len() != 3 {
		t.Fatalf("Len = %d, want 3 (blank line not counted)", s.Len())
	}
	if got := drain(t, s); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("got %v", got)
	}
	bad, err := os.ReadFile(path + corruptSuffix)
	if err != nil || string(bad) != "not json\n" {
		t.Fatalf("corrupt file = %q, %v", bad, err)
	}
}

func TestSpoolReplayOrder(t *testing.T) {
	s := openSpoolT(t, filepath.Join(t.TempDir(), "spool"))
	appendT(t, s, 0, 500)
	if got := drain(t, s); !slices.Equal(got, ids(0, 500)) {
		t.Fatalf("order: got %v", got)
	}
	if got := drain(t, s); got != nil {
		t.Fatalf("second replay applied %v", got)
	}
}

func TestSpoolReplayStopsOnError(t *testing.T) {
	errDown := errors.New("redis down")
	for _, failAt := range []int{0, 2, 5, 9} {
		t.Run(fmt.Sprint(failAt), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "spool")
			s := openSpoolT(t, path)
			appendT(t, s, 0, 10)
			var got []string
			n, err := s.Replay(context.Background(), func(_ context.Context, e spoolEntry) error {
				if e.ID == entry(failAt).ID {
					return errDown
				}
				got = append(got, e.ID)
				return nil
			})
			if !errors.Is(err, errDown) || n != failAt || !slices.Equal(got, ids(0, failAt)) {
				t.Fatalf("Replay = %d, %v; applied %v", n, err, got)
			}
			if s.Len() != 10-failAt {
				t.Fatalf("Len = %d, want %d", s.Len(), 10-failAt)
			}
			appendT(t, s, 10, 11)
			s.Close()

			// The applied ones are gone for good, the rest (and the late
			// append) are all there, in order.
			s = openSpoolT(t, path)
			if got := drain(t, s); !slices.Equal(got, ids(failAt, 11)) {
				t.Fatalf("after reopen got %v", got)
			}
		})
	}
}

func TestSpoolReplayContextCanceled(t *testing.T) {
	s := openSpoolT(t, filepath.Join(t.TempDir(), "spool"))
	appendT(t, s, 0, 5)
	ctx, cancel := context.WithCancel(context.Background())
	n, err := s.Replay(ctx, func(_ context.Context, e spoolEntry) error {
		if e.ID == entry(1).ID {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n != 2 || s.Len() != 3 {
		t.Fatalf("Replay = %d, %v; Len %d", n, err, s.Len())
	}
}

func TestSpoolAppendDuringSlowReplay(t *testing.T) {
	defer func(n int) { checkpointEvery = n }(checkpointEvery)
	checkpointEvery = 7

	path := filepath.Join(t.TempDir(), "spool")
	s := openSpoolT(t, path)
	appendT(t, s, 0, 50)

	const writers, each = 16, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := s.Append(spoolEntry{ID: fmt.Sprintf("w%02d-%03d", w, i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()

	// Replay again and again while the writers run, so that compactions
	// race with appends; apply yields to let appends interleave.
	seen := map[string]int{}
	var order []string
	apply := func(_ context.Context, e spoolEntry) error {
		seen[e.ID]++
		order = append(order, e.ID)
		for range 10 {
			_ = s.Len() // contend on the lock the appenders take
		}
		return nil
	}
	for done := false; !done; {
		select {
		case <-writersDone:
			done = true
		default:
		}
		if _, err := s.Replay(context.Background(), apply); err != nil {
			t.Fatal(err)
		}
	}
	if s.Len() != 0 {
		t.Fatalf("Len = %d after final replay", s.Len())
	}
	if len(seen) != 50+writers*each {
		t.Fatalf("applied %d distinct entries, want %d", len(seen), 50+writers*each)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s applied %d times", id, n)
		}
	}
	// Each writer's entries come out in the order it appended them.
	next := map[string]int{}
	for _, id := range order {
		if w, i, ok := strings.Cut(id, "-"); ok {
			if want := fmt.Sprintf("%03d", next[w]); i != want {
				t.Fatalf("%s out of order, want %s-%s", id, w, want)
			}
			next[w]++
		}
	}
	s.Close()
	if s := openSpoolT(t, path); s.Len() != 0 {
		t.Fatalf("Len after reopen = %d", s.Len())
	}
}
