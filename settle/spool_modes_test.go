package settle

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cnaitoken/caddy-aitoken/internal/filemode"
)

// Spooled entries hold usage details: the spool's folder (when it creates
// it) and files are the owner's only, and files found with a wider mode
// are tightened. A folder the operator made keeps its mode.
func TestSpoolFileModes(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	root := t.TempDir()
	path := filepath.Join(root, "made", "spool.log")
	s := openSpoolT(t, path)
	appendT(t, s, 0, 3)
	filemode.Want(t, filepath.Join(root, "made"), 0o700)
	filemode.Want(t, path, 0o600)
	s.Close()

	dir := filepath.Join(root, "operator")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "spool.log")
	for _, p := range []string{path, path + appliedSuffix, path + corruptSuffix} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o664); err != nil {
			t.Fatal(err)
		}
	}
	s = openSpoolT(t, path)
	appendT(t, s, 0, 1)
	filemode.Want(t, dir, 0o755)
	for _, p := range []string{path, path + appliedSuffix, path + corruptSuffix} {
		filemode.Want(t, p, 0o600)
	}
}
