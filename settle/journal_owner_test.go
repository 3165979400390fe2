package settle

import (
	"testing"
)

// TestJournalSecondOpenDoesNotStealALiveJournal opens a prefix that another
// journal is still writing (another process on the same spool_dir, e.g.
// `caddy validate` run with the server's config, or a pooled Redis
// connection re-created while the old one still drains). The newcomer must
// not take the live journal's in-flight records as leftovers nor delete its
// files: if it does, the live process's records written ahead afterwards
// are gone after a kill -9, and its in-flight ones are replayed by the
// newcomer while the live process settles them too.
func TestJournalSecondOpenDoesNotStealALiveJournal(t *testing.T) {
	dir := t.TempDir()
	live, err := openJournal(dir, "j")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.Append([]byte(`{"n":1}`)); err != nil { // in flight
		t.Fatal(err)
	}

	other, err := openJournal(dir, "j")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := other.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 0 {
		t.Errorf("a second openJournal took %d in-flight records of a live journal as leftovers: %q", len(recs), recs)
	}
	if err := other.DropLeftovers(); err != nil {
		t.Fatal(err)
	}
	_ = other.Close()

	// The live journal writes one more record ahead, then its process is
	// killed (no Close): both records must be found at the next start.
	if _, err := live.Append([]byte(`{"n":2}`)); err != nil {
		t.Fatal(err)
	}
	live.crash()
	next, err := openJournal(dir, "j")
	if err != nil {
		t.Fatal(err)
	}
	got, err := next.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("after a kill, the next start finds %q; want the 2 records the live journal wrote ahead", got)
	}
}
