// Package filemode is a test kit: it checks the permission bits of files
// the product creates.
package filemode

import (
	"os"
	"testing"
)

// Want reports an error on t unless path's permission bits are want.
func Want(t testing.TB, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != want {
		t.Errorf("%s: mode %#o, want %#o", path, got, want)
	}
}
