package settle

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func openJournalT(t testing.TB, dir string) *journal {
	t.Helper()
	j, err := openJournal(dir, "journal-x")
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func journalFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "journal-x-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func leftovers(t testing.TB, j *journal) []string {
	t.Helper()
	recs, err := j.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, r := range recs {
		s = append(s, string(r))
	}
	return s
}

func TestJournalOutstandingRecordsSurviveAndDoneOnesDoNot(t *testing.T) {
	dir := t.TempDir()
	j := openJournalT(t, dir)
	var tickets []ticket
	for i := range 5 {
		tk, err := j.Append([]byte(fmt.Sprintf(`{"n":%d}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		tickets = append(tickets, tk)
	}
	if got := j.Pending(); got != 5 {
		t.Fatalf("Pending = %d, want 5", got)
	}
	j.Done(tickets[0])
	j.Done(tickets[2])
	j.Done(tickets[4])
	// A killed process: nothing closed. The next openJournal finds every record
	// of the file (done or not: replays are idempotent), none is lost.
	j.crash()
	j2 := openJournalT(t, dir)
	got := leftovers(t, j2)
	if len(got) != 5 || got[1] != `{"n":1}` || got[3] != `{"n":3}` {
		t.Fatalf("leftovers = %q", got)
	}
	if err := j2.DropLeftovers(); err != nil {
		t.Fatal(err)
	}
	if _, err := j2.Append([]byte(`{"n":9}`)); err != nil {
		t.Fatal(err)
	}
	// The old file is gone; the new one does not reuse its name.
	if fs := journalFiles(t, dir); len(fs) != 1 || filepath.Base(fs[0]) != "journal-x-1.log" {
		t.Fatalf("files = %v, want only journal-x-1.log", fs)
	}
}

func TestJournalCloseRemovesAnIdleFileAndKeepsABusyOne(t *testing.T) {
	dir := t.TempDir()
	j := openJournalT(t, dir)
	tk, err := j.Append([]byte(`a`))
	if err != nil {
		t.Fatal(err)
	}
	j.Done(tk)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if fs := journalFiles(t, dir); len(fs) != 0 {
		t.Fatalf("files after an idle close = %v", fs)
	}
	if _, err := j.Append([]byte(`b`)); err != errJournalClosed {
		t.Fatalf("Append after Close = %v, want errJournalClosed", err)
	}

	j = openJournalT(t, dir)
	if _, err := j.Append([]byte(`busy`)); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if got := leftovers(t, openJournalT(t, dir)); len(got) != 1 || got[0] != "busy" {
		t.Fatalf("leftovers after a busy close = %q", got)
	}
}

func TestJournalTornLastLineIsSkipped(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "journal-x-3.log")
	if err := os.WriteFile(path, []byte("one\n\ntwo\nthr"), 0o600); err != nil {
		t.Fatal(err)
	}
	j := openJournalT(t, dir)
	if got := leftovers(t, j); strings.Join(got, ",") != "one,two" {
		t.Fatalf("leftovers = %q", got)
	}
	if err := j.DropLeftovers(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("leftover file still there: %v", err)
	}
}

func TestJournalRejectsNewlines(t *testing.T) {
	j := openJournalT(t, t.TempDir())
	if _, err := j.Append([]byte("a\nb")); err == nil {
		t.Fatal("a record with a newline was accepted")
	}
}

// A full file goes once its records are all Done. A mapped one is kept
// emptied, as the spare the next full file is swapped for: the journal
// never holds more than the open file and the spare.
func TestJournalFullFilesAreRemovedOnceDone(t *testing.T) {
	dir := t.TempDir()
	j := openJournalT(t, dir)
	rec := []byte(strings.Repeat("x", 64<<10))
	fill := func() []ticket {
		var tickets []ticket
		for range segmentSize/len(rec) + 2 {
			tk, err := j.Append(rec)
			if err != nil {
				t.Fatal(err)
			}
			tickets = append(tickets, tk)
		}
		return tickets
	}
	tickets := fill()
	if fs := journalFiles(t, dir); len(fs) != 2 {
		t.Fatalf("files = %d, want 2 (one sealed)", len(fs))
	}
	for _, tk := range tickets {
		j.Done(tk)
	}
	fs := journalFiles(t, dir)
	want := 1 // the open one
	if mapJournal {
		want = 2 // and the spare
	}
	if len(fs) != want {
		t.Fatalf("files after all done = %v, want %d", fs, want)
	}
	// The open file, idle and over the threshold, was emptied, and so was
	// the spare.
	for _, f := range fs {
		if n := recordBytes(t, f); n != 0 {
			t.Fatalf("%s holds %d bytes of records; want none", f, n)
		}
	}
	if j.Pending() != 0 {
		t.Fatalf("Pending = %d", j.Pending())
	}
	if !mapJournal {
		return
	}
	// The next full file swaps in the spare, under the next free number:
	// number 2 is taken meanwhile by another journal on the prefix, whose
	// file is left alone.
	spare := fs[0]
	other := filepath.Join(dir, "journal-x-2.log")
	if err := os.WriteFile(other, []byte("other\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tickets = fill()
	fs = journalFiles(t, dir)
	if len(fs) != 3 || slices.Contains(fs, spare) || !slices.Contains(fs, filepath.Join(dir, "journal-x-3.log")) {
		t.Fatalf("files = %v after filling one again; want the other journal's, the open one and %s as number 3", fs, filepath.Base(spare))
	}
	if b, err := os.ReadFile(other); err != nil || string(b) != "other\n" {
		t.Fatalf("the other journal's file holds %q (%v)", b, err)
	}
	if got := leftoverCount(t, dir); got != len(tickets)+1 {
		t.Fatalf("%d records in the files, want %d", got, len(tickets)+1)
	}
	for _, tk := range tickets {
		j.Done(tk)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if fs := journalFiles(t, dir); len(fs) != 1 || fs[0] != other {
		t.Fatalf("files after Close = %v, want only the other journal's", fs)
	}
}

// leftoverCount is how many records the journal files in dir hold.
func leftoverCount(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, f := range journalFiles(t, dir) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimRight(string(bytes.TrimRight(b, "\x00")), "\n"), "\n") {
			if line != "" {
				n++
			}
		}
	}
	return n
}

func TestJournalConcurrentAppendDone(t *testing.T) {
	dir := t.TempDir()
	j := openJournalT(t, dir)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				tk, err := j.Append([]byte(fmt.Sprintf("g%d-%d", g, i)))
				if err != nil {
					t.Error(err)
					return
				}
				if i%2 == 0 {
					j.Done(tk)
				}
			}
		}()
	}
	wg.Wait()
	if got := j.Pending(); got != 8*250 {
		t.Fatalf("Pending = %d, want %d", got, 8*250)
	}
	j.crash()
	recs := leftovers(t, openJournalT(t, dir))
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r] = true
	}
	for g := range 8 {
		for i := 1; i < 500; i += 2 {
			if !seen[fmt.Sprintf("g%d-%d", g, i)] {
				t.Fatalf("outstanding record g%d-%d missing", g, i)
			}
		}
	}
}

func BenchmarkJournalAppendDone(b *testing.B) {
	j := openJournalT(b, b.TempDir())
	rec := []byte(strings.Repeat("r", 600))
	b.ReportAllocs()
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		tk, err := j.Append(rec)
		if err != nil {
			b.Fatal(err)
		}
		j.Done(tk)
	}
}

// crash plays the process being killed: the lock and the files are let
// go, nothing is removed.
func (j *journal) crash() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.closed = true
	if s := j.cur; s != nil && s.f != nil {
		if s.data != nil {
			_ = syscall.Munmap(s.data) // what was copied in stays in the file
			s.data = nil
		}
		_ = s.f.Close()
		s.f = nil
	}
	j.unlock()
}

func TestJournalTruncateIdleClearsSettledRecords(t *testing.T) {
	dir := t.TempDir()
	j := openJournalT(t, dir)
	a, _ := j.Append([]byte("settled"))
	b, _ := j.Append([]byte("in flight"))
	j.Done(a)
	j.TruncateIdle() // one record still outstanding: nothing goes
	fs := journalFiles(t, dir)
	if n := recordBytes(t, fs[0]); n != len("settled\nin flight\n") {
		t.Fatalf("a busy file holds %d bytes of records; want both records", n)
	}
	j.Done(b)
	j.TruncateIdle()
	if n := recordBytes(t, fs[0]); n != 0 {
		t.Fatalf("idle file holds %d bytes of records; want none", n)
	}
}

// recordBytes counts the bytes in the journal file at path that are not
// zero: what is left of records, whether the file is mapped (zeros after
// the records) or written.
func recordBytes(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range b {
		if c != 0 {
			n++
		}
	}
	return n
}

// TestJournalWithoutMapping runs the journal's tests with records written
// to their files, as on a file system that cannot allocate ahead.
func TestJournalWithoutMapping(t *testing.T) {
	old := mapJournal
	mapJournal = false
	t.Cleanup(func() { mapJournal = old })
	t.Run("survive", TestJournalOutstandingRecordsSurviveAndDoneOnesDoNot)
	t.Run("close", TestJournalCloseRemovesAnIdleFileAndKeepsABusyOne)
	t.Run("full", TestJournalFullFilesAreRemovedOnceDone)
	t.Run("concurrent", TestJournalConcurrentAppendDone)
	t.Run("idle", TestJournalTruncateIdleClearsSettledRecords)
}
