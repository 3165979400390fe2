package settle

// This file is the spool: it keeps settlements that could not reach Redis in
// a local append-only file until the replayer applies them once Redis is
// back, so that no usage record is ever dropped.
//
// Files, all next to the spool file at path:
//
//	path          one JSON spoolEntry per line, appended with O_APPEND and fsynced
//	path.applied  byte offset in path up to which entries have been applied
//	path.corrupt  lines that could not be decoded, set aside for a human
//
// Delivery is at least once. A crash never loses an entry whose Append
// returned nil and which Replay has not yet applied, but an entry that was
// applied may be applied again after a crash (or after a failed write of the
// applied offset), so the apply function must be idempotent, e.g. keyed by the
// request ID.
//
// One process should own a path. Within a process, openSpool on a path that
// is already open shares the same file, so an old and a new Caddy config can
// both hold the spool during a reload.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
)

const (
	appliedSuffix = ".applied"
	corruptSuffix = ".corrupt"
	tmpSuffix     = ".tmp"
)

// errSpoolClosed is returned by a spool that has been closed.
var errSpoolClosed = errors.New("spool: closed")

// spoolEntry is one settlement waiting for Redis. Payload (a Record's JSON)
// is opaque to the spool; it is stored compacted, one entry per line.
type spoolEntry struct {
	ID      string          `json:"id"`
	Payload json.RawMessage `json:"p"`
}

// spool is a durable queue of entries in a local file. Its methods are safe
// for concurrent use.
type spool struct {
	fl     *spoolFile
	closed atomic.Bool
}

// file is the state shared by every spool open on one path.
type spoolFile struct {
	path string // absolute
	refs int    // guarded by spoolFilesMu

	// replayMu lets one Replay run at a time; only Replay writes the
	// applied-offset file and compacts.
	replayMu sync.Mutex
	// syncMu serialises fsyncs of appended data, so that concurrent appends
	// share one fsync. Lock order: syncMu, then mu.
	syncMu sync.Mutex
	synced uint64 // appends known to be durable; guarded by syncMu

	mu       sync.Mutex
	f        *os.File
	size     int64  // length of f, whole lines only
	off      int64  // entries before off have been applied
	savedOff int64  // off as last written to path.applied
	n        int    // entries in [off, size)
	written  uint64 // appends written to f
	err      error  // sticky: f can no longer be trusted with appends
	closed   bool

	hook func(stage string) // tests only: called at crash-relevant points
}

var (
	spoolFilesMu sync.Mutex
	spoolFiles   = map[string]*spoolFile{}
)

// openSpool opens the spool at path, creating its directory (0700) and the
// file (0600) if needed; an existing directory is left as it is, while the
// spool's files found with wider modes are made 0600. It counts the entries
// still waiting; a torn last line, left by a crash in the middle of an Append
// that therefore never returned nil, is cut off.
func openSpool(path string) (*spool, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	spoolFilesMu.Lock()
	defer spoolFilesMu.Unlock()
	if fl, ok := spoolFiles[abs]; ok {
		fl.refs++
		return &spool{fl: fl}, nil
	}
	fl, err := loadSpool(abs)
	if err != nil {
		return nil, err
	}
	fl.refs = 1
	spoolFiles[abs] = fl
	return &spool{fl: fl}, nil
}

func loadSpool(path string) (*spoolFile, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// A compaction cut short leaves its temp file behind; the entries in it
	// are still in path, so it can go.
	_ = os.Remove(path + tmpSuffix)
	_ = os.Remove(path + appliedSuffix + tmpSuffix)

	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// Entries hold usage details: owner only, even if the file (or its
	// applied offset, or quarantined lines) was left wider.
	err = ownerOnly(f)
	for _, p := range []string{path + appliedSuffix, path + corruptSuffix} {
		if err == nil {
			err = chmodOwnerOnly(p)
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	fl, err := loadSpoolFile(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return fl, nil
}

func loadSpoolFile(path string, f *os.File) (*spoolFile, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	saved := readOffset(path + appliedSuffix)
	good, all, after, onLine, err := scan(io.NewSectionReader(f, 0, st.Size()), saved)
	if err != nil {
		return nil, fmt.Errorf("spool: read %s: %w", path, err)
	}
	if good < st.Size() {
		if err := f.Truncate(good); err != nil {
			return nil, fmt.Errorf("spool: cut torn line: %w", err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("spool: fsync: %w", err)
		}
	}
	fl := &spoolFile{path: path, f: f, size: good, off: saved, savedOff: saved, n: after}
	if !onLine {
		// The offset does not belong to this file (it cannot happen through
		// this package, but replaying everything is the safe reading).
		fl.off, fl.n = 0, all
	}
	return fl, nil
}

// scan reads r and returns the length of its whole lines (a tail without a
// newline is torn), the number of entries in all of them and in those that
// start at or after from, and whether from falls on the start of a line.
func scan(r io.Reader, from int64) (good int64, all, after int, onLine bool, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	onLine = from == 0
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			return good, all, after, onLine, nil
		}
		if err != nil {
			return 0, 0, 0, false, err
		}
		start := good
		good += int64(len(line))
		if !blank(line) {
			all++
			if start >= from {
				after++
			}
		}
		if good == from {
			onLine = true
		}
	}
}

func blank(line []byte) bool { return len(bytes.TrimSpace(line)) == 0 }

// readOffset returns the applied offset stored at path, or 0 if there is
// none or it cannot be read: replaying from the start is always safe.
func readOffset(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	off, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil || off < 0 {
		return 0
	}
	return off
}

// Append adds e to the end of the spool as one JSON line and returns once it
// is on disk (fsynced). Concurrent appends share fsyncs. After a write or
// fsync error the spool refuses further appends until it is reopened, since
// the kernel may have dropped data it had accepted.
func (s *spool) Append(e spoolEntry) error {
	if s.closed.Load() {
		return errSpoolClosed
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil { // compacts Payload and adds the newline
		return fmt.Errorf("spool: encode entry: %w", err)
	}
	fl := s.fl
	fl.mu.Lock()
	if err := fl.usable(); err != nil {
		fl.mu.Unlock()
		return err
	}
	n, err := fl.f.Write(buf.Bytes())
	if err != nil {
		err = fmt.Errorf("spool: write: %w", err)
		// Cut off a partial line so the next append does not run into it.
		if n > 0 {
			if terr := fl.f.Truncate(fl.size); terr != nil {
				fl.err = err
			}
		}
		fl.mu.Unlock()
		return err
	}
	fl.size += int64(n)
	fl.n++
	fl.written++
	seq := fl.written
	fl.mu.Unlock()
	return fl.sync(seq)
}

// usable reports why fl cannot take appends; mu must be held.
func (fl *spoolFile) usable() error {
	if fl.closed {
		return errSpoolClosed
	}
	return fl.err
}

// sync returns once append number seq is durable, fsyncing if no other
// caller has done so since it was written.
func (fl *spoolFile) sync(seq uint64) error {
	fl.syncMu.Lock()
	defer fl.syncMu.Unlock()
	if fl.synced >= seq {
		return nil
	}
	fl.mu.Lock()
	f, upto, err := fl.f, fl.written, fl.usable()
	fl.mu.Unlock()
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		err = fmt.Errorf("spool: fsync: %w", err)
		fl.mu.Lock()
		if fl.err == nil {
			fl.err = err
		}
		fl.mu.Unlock()
		return err
	}
	fl.synced = upto
	return nil
}

// Len returns the number of entries waiting to be applied.
func (s *spool) Len() int {
	s.fl.mu.Lock()
	defer s.fl.mu.Unlock()
	return s.fl.n
}

// Close releases this handle; the file is closed with the last handle on its
// path. Entries stay on disk for the next openSpool. Stop any replayer first.
func (s *spool) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	spoolFilesMu.Lock()
	defer spoolFilesMu.Unlock()
	fl := s.fl
	if fl.refs--; fl.refs > 0 {
		return nil
	}
	delete(spoolFiles, fl.path)
	fl.syncMu.Lock()
	defer fl.syncMu.Unlock()
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.closed = true
	// Appends waiting in sync() are covered by this fsync.
	serr := fl.f.Sync()
	if serr == nil {
		fl.synced = fl.written
	}
	return errors.Join(serr, fl.f.Close())
}

// syncDir makes renames and new files in dir durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be fsynced there
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("spool: fsync dir: %w", err)
	}
	return nil
}
