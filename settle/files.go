package settle

import (
	"errors"
	"os"
	"syscall"
)

// The journal's and the spool's records hold usage details: their files
// are the owner's only.

// ownerOnly takes the group and other permission bits off an open file.
func ownerOnly(f *os.File) error {
	st, err := f.Stat()
	if err != nil || st.Mode().Perm()&0o077 == 0 {
		return err
	}
	return bestEffort(f.Chmod(st.Mode().Perm() &^ 0o077))
}

// chmodOwnerOnly takes the group and other permission bits off the file
// at path, if it still exists.
func chmodOwnerOnly(path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil || st.Mode().Perm()&0o077 == 0 {
		return err
	}
	return bestEffort(os.Chmod(path, st.Mode().Perm()&^0o077))
}

// bestEffort forgives a chmod refused because the file is not ours
// (EPERM) or the disk is read-only (EROFS): an operator's own setup that
// worked before files were tightened keeps working.
func bestEffort(err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EROFS) {
		return nil
	}
	return err
}
