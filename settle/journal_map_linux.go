package settle

import (
	"os"
	"syscall"
)

// Magic numbers (statfs f_type) of the file systems on which allocating a
// file ahead reserves its blocks for good, so that stores into its mapping
// cannot fail: ext2/3/4, XFS and tmpfs. On others (ZFS, btrfs, overlay, NFS,
// ...) a mapped page can still lack room when written, which kills the
// process (SIGBUS) where a write() would fail with an error.
var preallocatingFS = map[int64]bool{0xEF53: true, 0x58465342: true, 0x01021994: true}

// mapSegment allocates f at size bytes and maps it shared, or returns nil
// (and leaves f empty) where that is not safe or not possible: the
// segment's records are written then.
func mapSegment(f *os.File, size int) []byte {
	fd := int(f.Fd())
	var st syscall.Statfs_t
	if !mapJournal || syscall.Fstatfs(fd, &st) != nil || !preallocatingFS[int64(st.Type)] {
		return nil
	}
	if syscall.Fallocate(fd, 0, 0, int64(size)) != nil {
		_ = f.Truncate(0)
		return nil
	}
	data, err := syscall.Mmap(fd, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		_ = f.Truncate(0)
		return nil
	}
	return data
}
