package settle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// snapshot copies the spool's files as they are now on disk, which is what a
// crash at this instant would leave, and returns the path of the copy.
func snapshot(t *testing.T, path string) string {
	t.Helper()
	dir := t.TempDir()
	for _, suffix := range []string{"", appliedSuffix, tmpSuffix, appliedSuffix + tmpSuffix} {
		b, err := os.ReadFile(path + suffix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "spool"+suffix), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "spool")
}

func TestSpoolCrashAtEveryStep(t *testing.T) {
	defer func(n int) { checkpointEvery = n }(checkpointEvery)
	checkpointEvery = 3
	const total = 10
	all := ids(0, total)
	errDown := errors.New("redis down")

	for _, failAt := range []int{-1, 4, 8} { // -1: no failure
		t.Run(fmt.Sprint(failAt), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "spool")
			s := openSpoolT(t, path)
			appendT(t, s, 0, total)

			type crash struct {
				stage   string
				applied int // entries applied when the crash happened
				path    string
			}
			var crashes []crash
			applied := 0
			s.fl.hook = func(stage string) {
				crashes = append(crashes, crash{stage, applied, snapshot(t, path)})
			}
			_, err := s.Replay(context.Background(), func(_ context.Context, e spoolEntry) error {
				if e.ID == entry(failAt).ID {
					return errDown
				}
				applied++
				crashes = append(crashes, crash{"applied " + e.ID, applied, snapshot(t, path)})
				return nil
			})
			if failAt >= 0 && !errors.Is(err, errDown) || failAt < 0 && err != nil {
				t.Fatalf("Replay: %v", err)
			}
			crashes = append(crashes, crash{"returned", applied, snapshot(t, path)})

			replayedAgain := false
			for _, c := range crashes {
				got := drain(t, openSpoolT(t, c.path))
				// Nothing not yet applied is lost, order is kept, and
				// already-applied entries only come back as a prefix.
				if len(got) < total-c.applied || !slices.Equal(got, all[total-len(got):]) {
					t.Fatalf("crash at %q with %d applied: replay gives %v", c.stage, c.applied, got)
				}
				if len(got) > total-c.applied {
					replayedAgain = true
				}
				if c.stage == "offset-reset" && len(got) != total {
					t.Errorf("crash after offset reset: want all %d again, got %d", total, len(got))
				}
				if c.stage == "returned" && len(got) != total-c.applied {
					t.Errorf("crash after Replay returned: %d replayed, want exactly %d", len(got), total-c.applied)
				}
			}
			stages := map[string]bool{}
			for _, c := range crashes {
				stages[c.stage] = true
			}
			if compacts := failAt != 4; compacts != (stages["offset-reset"] && stages["renamed"]) {
				t.Errorf("compaction stages seen %v, want compaction %v", stages, compacts)
			}
			if !replayedAgain {
				t.Error("no crash point replayed an applied entry; the test is not exercising the window")
			}
		})
	}
}
