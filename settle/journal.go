package settle

// This file is the journal: it writes settlements ahead to a local file
// before the response they bill ends, so that the settlement itself can run
// after the response, off the client's critical path, and still survive the
// process being killed in between: what a process has written, the kernel
// keeps.
//
// Records are not fsynced (an fsync per request would cost more than the
// Redis round trip it takes off the path): a power loss or kernel crash may
// lose the newest records, as Redis's own appendfsync everysec would.
//
// Files, in dir, named prefix-<n>.log: one record per line. A file is
// allocated at its full size when it is started (fallocate) and mapped
// shared into memory: appending a record is a copy, with no system call per
// request, and what the process has copied is in the kernel's page cache,
// which keeps it when the process is killed. The rest of the file is zeros,
// which readers take for a torn end. On file systems where allocating ahead
// does not reserve blocks for good (anything but ext4, XFS and tmpfs: a
// store into a page the full disk has no room for would kill the process),
// and where allocating fails, records are appended in a single write each
// instead. A file is removed once it is full and every record in it is
// Done; the open one is emptied (zeroed, or truncated) whenever none of its
// records is outstanding. Records still in files when a journal is opened are the
// Leftovers of a process that stopped before settling them.
//
// A journal owns its prefix while it is open: an exclusive lock on
// prefix.lock. Another journal opened on the same prefix meanwhile (a
// second process on the same directory, such as `caddy validate` run with
// the server's config) finds no leftovers, deletes nothing, and writes its
// own files.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// errJournalClosed is returned by Append on a closed journal.
var errJournalClosed = errors.New("journal: closed")

// Default sizes: a file is sealed at segmentSize, and the open file is
// truncated when idle and over truncateSize.
const (
	segmentSize  = 4 << 20
	truncateSize = 64 << 10
)

// mapJournal is false (in tests) to write every segment's records.
var mapJournal = true

// journal is a write-ahead log of records in flight. Its methods are safe
// for concurrent use.
type journal struct {
	dir, prefix string

	mu        sync.Mutex
	cur       *segment
	next      int
	pending   int64
	closed    bool
	buf       []byte
	spare     *segment // a retired mapped file, emptied, for the next rotate
	leftovers []string
	lock      *os.File // held (flock) while this journal owns its prefix
}

// ticket names a record until it is Done.
type ticket struct{ s *segment }

// openJournal opens the journal prefix in dir, creating dir (0700) if
// needed; an existing dir is left as it is. Its files are the owner's only
// (0600): those it creates, and the lock and leftover files it finds, whose
// wider modes it takes back. Files found there are left for Leftovers and
// DropLeftovers; new records go to a new file.
func openJournal(dir, prefix string) (*journal, error) {
	if strings.ContainsAny(prefix, `/\`) || prefix == "" {
		return nil, fmt.Errorf("journal: bad prefix %q", prefix)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	j := &journal{dir: dir, prefix: prefix}
	lock, err := os.OpenFile(filepath.Join(dir, prefix+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if err := ownerOnly(lock); err != nil {
		lock.Close()
		return nil, fmt.Errorf("journal: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		j.lock = lock
	} else {
		lock.Close() // another journal owns the prefix: leave its files alone
	}
	paths, err := filepath.Glob(filepath.Join(dir, prefix+"-*.log"))
	if err != nil {
		j.unlock()
		return nil, fmt.Errorf("journal: %w", err)
	}
	for _, p := range paths {
		n, ok := j.number(p)
		if !ok {
			continue
		}
		if j.lock != nil {
			// Records hold usage details: owner only, even if an
			// older build (or a restore) left them wider.
			if err := chmodOwnerOnly(p); err != nil {
				j.unlock()
				return nil, fmt.Errorf("journal: %w", err)
			}
			j.leftovers = append(j.leftovers, p)
		}
		j.next = max(j.next, n+1)
	}
	sort.Slice(j.leftovers, func(a, b int) bool {
		na, _ := j.number(j.leftovers[a])
		nb, _ := j.number(j.leftovers[b])
		return na < nb
	})
	return j, nil
}

func (j *journal) number(path string) (int, bool) {
	s := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), j.prefix+"-"), ".log")
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

// Owner reports whether this journal owns its prefix (and so has the
// leftovers of earlier processes).
func (j *journal) Owner() bool { return j.lock != nil }

func (j *journal) unlock() {
	if j.lock != nil {
		_ = j.lock.Close() // releases the flock
		j.lock = nil
	}
}

// Leftovers returns the records in the files found at openJournal, oldest
// first. A torn last line (the process died mid-write) is skipped.
func (j *journal) Leftovers() ([][]byte, error) {
	var recs [][]byte
	for _, p := range j.leftovers {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		for len(data) > 0 {
			line, rest, ok := bytes.Cut(data, []byte{'\n'})
			if !ok {
				break // torn
			}
			if len(bytes.TrimSpace(line)) > 0 {
				recs = append(recs, line)
			}
			data = rest
		}
	}
	return recs, nil
}

// DropLeftovers removes the files found at openJournal, once their records
// are safe elsewhere.
func (j *journal) DropLeftovers() error {
	for _, p := range j.leftovers {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("journal: %w", err)
		}
	}
	j.leftovers = nil
	return nil
}

// Append writes rec, which must not contain a newline, as one record.
// Once it returns, the record survives the process being killed.
func (j *journal) Append(rec []byte) (ticket, error) {
	if bytes.IndexByte(rec, '\n') >= 0 {
		return ticket{}, errors.New("journal: record contains a newline")
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ticket{}, errJournalClosed
	}
	if j.cur == nil || j.cur.full(len(rec)+1) {
		if err := j.rotate(len(rec) + 1); err != nil {
			return ticket{}, err
		}
	}
	if err := j.cur.append(rec, &j.buf); err != nil {
		// A partial line is torn: readers skip it only at the end, so
		// start a new file for the next record.
		j.cur.sealed = true
		j.retire(j.cur)
		j.cur = nil
		return ticket{}, fmt.Errorf("journal: %w", err)
	}
	j.cur.open++
	j.pending++
	return ticket{j.cur}, nil
}

// rotate seals the open file and starts the next one, with room for a
// record of n bytes at least.
func (j *journal) rotate(n int) error {
	if j.cur != nil {
		j.cur.sealed = true
		j.retire(j.cur)
	}
	if j.reuseSpare(n) {
		return nil
	}
	var (
		path string
		f    *os.File
		err  error
	)
	// Another journal on the prefix may have taken a number: skip it.
	for range 1000 {
		path = filepath.Join(j.dir, j.prefix+"-"+strconv.Itoa(j.next)+".log")
		j.next++
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
		if !errors.Is(err, os.ErrExist) {
			break
		}
	}
	if err != nil {
		j.cur = nil
		return fmt.Errorf("journal: %w", err)
	}
	j.cur = &segment{path: path, f: f, data: mapSegment(f, max(segmentSize, n))}
	return nil
}

// reuseSpare makes the spare file, if there is one with room for n bytes,
// the open one under the next number: its pages are allocated and mapped
// already, where a new file's would fault in one by one (under steady load
// a file fills up before its records are all settled, so files come and
// go). It reports whether it did.
func (j *journal) reuseSpare(n int) bool {
	sp := j.spare
	if sp == nil {
		return false
	}
	j.spare = nil
	if int64(n) <= int64(len(sp.data)) {
		// A link, then the old name removed: unlike a rename, a link never
		// replaces a file another journal on the prefix has just made.
		for range 1000 {
			path := filepath.Join(j.dir, j.prefix+"-"+strconv.Itoa(j.next)+".log")
			j.next++
			err := os.Link(sp.path, path)
			if errors.Is(err, os.ErrExist) {
				continue
			}
			if err == nil {
				_ = os.Remove(sp.path)
				sp.path, sp.sealed = path, false
				j.cur = sp
				return true
			}
			break
		}
	}
	_ = sp.close()
	_ = os.Remove(sp.path)
	return false
}

// retire removes a sealed segment none of whose records is outstanding.
func (j *journal) retire(s *segment) {
	if !s.sealed || s.open > 0 || s.f == nil {
		return
	}
	_ = s.close()
	_ = os.Remove(s.path)
}

// keepSpare empties s, a sealed mapped segment none of whose records is
// outstanding, outside the lock (nothing else refers to it), and keeps it
// for the next rotate; without room for it (a spare is kept already, or
// the journal closed meanwhile) it is removed.
func (j *journal) keepSpare(s *segment) {
	s.empty()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.spare == nil && !j.closed {
		j.spare = s
		return
	}
	_ = s.close()
	_ = os.Remove(s.path)
}

// Done forgets t's record: it is settled, or safe elsewhere.
func (j *journal) Done(t ticket) {
	if t.s == nil {
		return
	}
	j.mu.Lock()
	s := t.s
	s.open--
	j.pending--
	switch {
	case s.sealed && s.open == 0 && s.f != nil && s.data != nil && !j.closed && j.spare == nil:
		j.mu.Unlock()
		j.keepSpare(s)
		return
	case s.sealed:
		j.retire(s)
	case s.open == 0 && s.size >= truncateSize && s.f != nil:
		s.empty()
	}
	j.mu.Unlock()
}

// TruncateIdle empties the open file when none of its records is
// outstanding, so settled records (with their usage details) do not
// linger on a quiet node.
func (j *journal) TruncateIdle() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if s := j.cur; s != nil && s.f != nil && s.open == 0 && s.size > 0 {
		s.empty()
	}
}

// Pending is the number of records not yet Done.
func (j *journal) Pending() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.pending
}

// Close stops the journal. The open file is removed when none of its
// records is outstanding; otherwise it stays, for the next openJournal's
// Leftovers. Records Done after Close are forgotten, their file kept.
func (j *journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	defer j.unlock()
	if sp := j.spare; sp != nil {
		j.spare = nil
		_ = sp.close()
		_ = os.Remove(sp.path)
	}
	s := j.cur
	j.cur = nil
	if s == nil || s.f == nil {
		return nil
	}
	err := s.close()
	if s.open == 0 {
		if rerr := os.Remove(s.path); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

// writeLeftover writes rec, fsynced, as a file of its own in dir that the
// next journal to own prefix finds among its Leftovers: for a record that
// outlived its journal (Append failed with errJournalClosed) and could be put
// nowhere else.
func writeLeftover(dir, prefix string, rec []byte) error {
	if bytes.IndexByte(rec, '\n') >= 0 {
		return errors.New("journal: record contains a newline")
	}
	path := filepath.Join(dir, prefix+"-"+strconv.FormatInt(time.Now().UnixNano(), 10)+".log")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	_, err = f.Write(append(append([]byte(nil), rec...), '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}
