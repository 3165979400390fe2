package settle

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cnaitoken/caddy-aitoken/internal/filemode"
)

// Journal records hold usage details: the folder openJournal creates and every
// file are the owner's only, and the lock and leftover files found with a
// wider mode are tightened. A folder the operator made keeps its mode.
func TestJournalFileModes(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	root := t.TempDir()
	dir := filepath.Join(root, "made", "journal")
	j := openJournalT(t, dir)
	if _, err := j.Append([]byte("rec")); err != nil {
		t.Fatal(err)
	}
	filemode.Want(t, filepath.Join(root, "made"), 0o700)
	filemode.Want(t, dir, 0o700)
	filemode.Want(t, filepath.Join(dir, "journal-x.lock"), 0o600)
	for _, f := range journalFiles(t, dir) {
		filemode.Want(t, f, 0o600)
	}
	if err := writeLeftover(dir, "journal-x", []byte("late")); err != nil {
		t.Fatal(err)
	}
	j.Close()

	dir = filepath.Join(root, "operator")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	wide := []string{filepath.Join(dir, "journal-x.lock"), filepath.Join(dir, "journal-x-3.log")}
	for _, p := range wide {
		if err := os.WriteFile(p, []byte("old\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o664); err != nil {
			t.Fatal(err)
		}
	}
	j = openJournalT(t, dir)
	defer j.Close()
	if _, err := j.Append([]byte("rec")); err != nil {
		t.Fatal(err)
	}
	filemode.Want(t, dir, 0o755)
	for _, p := range wide {
		filemode.Want(t, p, 0o600)
	}
	for _, f := range journalFiles(t, dir) {
		filemode.Want(t, f, 0o600)
	}
}
