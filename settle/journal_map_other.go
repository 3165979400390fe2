//go:build !linux

package settle

import "os"

// mapSegment maps nothing here: without a way to reserve a file's blocks
// ahead (fallocate), a store into a mapping could kill the process when the
// disk is full. The segment's records are written.
func mapSegment(f *os.File, size int) []byte { return nil }
