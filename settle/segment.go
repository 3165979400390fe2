package settle

// A journal's files: segments, each mapped into memory or written to.

import (
	"errors"
	"os"
	"syscall"
)

// segment is one journal file.
type segment struct {
	path   string
	f      *os.File
	data   []byte // the file mapped shared, or nil: records are written
	size   int64  // bytes of records in the file
	open   int
	sealed bool
}

// full reports whether a record of n bytes, newline included, no longer
// fits in s.
func (s *segment) full(n int) bool {
	if s.data != nil {
		return s.size+int64(n) > int64(len(s.data))
	}
	return s.size >= segmentSize
}

// append adds rec and its newline to s.
func (s *segment) append(rec []byte, buf *[]byte) error {
	if s.data != nil {
		copy(s.data[s.size:], rec)
		s.data[s.size+int64(len(rec))] = '\n'
		s.size += int64(len(rec)) + 1
		return nil
	}
	*buf = append(append((*buf)[:0], rec...), '\n')
	n, err := s.f.Write(*buf)
	s.size += int64(n)
	if cap(*buf) > 64<<10 {
		*buf = nil
	}
	return err
}

// empty forgets s's records, on disk too: a mapped file is zeroed where
// records were (the pages stay allocated), a written one truncated.
func (s *segment) empty() {
	if s.data != nil {
		// From the end back: a process killed midway leaves whole records
		// and then zeros, never the tail of a record after zeros.
		for end := s.size; end > 0; end -= 4096 {
			clear(s.data[max(end-4096, 0):end])
		}
		s.size = 0
		return
	}
	if s.f.Truncate(0) == nil {
		s.size = 0
	}
}

// close unmaps and closes s's file; a file whose records are outstanding
// keeps them, without the zeros after them.
func (s *segment) close() error {
	var err error
	if s.data != nil {
		err = syscall.Munmap(s.data)
		s.data = nil
		if s.open > 0 {
			err = errors.Join(err, s.f.Truncate(s.size))
		}
	}
	err = errors.Join(err, s.f.Close())
	s.f = nil
	return err
}
