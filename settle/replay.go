package settle

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// checkpointEvery is how many consumed entries Replay lets pass between
// writes of the applied offset. A crash replays at most this many again.
var checkpointEvery = 1000

// Replay calls apply for each waiting entry, in append order, including
// entries appended while it runs. Applied entries are removed from the file
// durably before Replay returns. On the first error from apply (or ctx) it
// stops and returns the error; that entry and every later one stay waiting.
// Lines that are not valid entries are moved to path.corrupt and skipped.
//
// Replay calls are serialised; Append may run at any time and is never lost.
//
// Crash safety: a crash at any point leaves every entry not yet applied in the
// file. Entries applied since the last checkpoint (at most checkpointEvery of
// them, or, in the brief window of a compaction, the whole file) are applied
// again after a restart, so apply must be idempotent.
func (s *spool) Replay(ctx context.Context, apply func(context.Context, spoolEntry) error) (applied int, err error) {
	if s.closed.Load() {
		return 0, errSpoolClosed
	}
	fl := s.fl
	fl.replayMu.Lock()
	defer fl.replayMu.Unlock()
	defer func() {
		if ferr := fl.finish(err == nil); err == nil {
			err = ferr
		}
	}()
	for {
		fl.mu.Lock()
		f, off, end, closed := fl.f, fl.off, fl.size, fl.closed
		fl.mu.Unlock()
		if closed {
			return applied, errSpoolClosed
		}
		if off == end {
			return applied, nil
		}
		n, err := fl.replayRange(ctx, f, off, end, apply)
		applied += n
		if err != nil {
			return applied, err
		}
	}
}

// replayRange applies the entries in f[off:end], which only Replay (holding
// replayMu) can change, so it is read without holding mu.
func (fl *spoolFile) replayRange(ctx context.Context, f *os.File, off, end int64, apply func(context.Context, spoolEntry) error) (applied int, err error) {
	br := bufio.NewReaderSize(io.NewSectionReader(f, off, end-off), 64<<10)
	for pos, since := off, 0; pos < end; {
		if err := ctx.Err(); err != nil {
			return applied, err
		}
		line, err := br.ReadBytes('\n')
		if err != nil {
			return applied, fmt.Errorf("spool: read: %w", err)
		}
		entry := !blank(line)
		if entry {
			var e spoolEntry
			if derr := json.Unmarshal(line, &e); derr != nil {
				if err := fl.quarantine(line); err != nil {
					return applied, err
				}
			} else if err := apply(ctx, e); err != nil {
				return applied, err
			} else {
				applied++
			}
		}
		pos += int64(len(line))

		fl.mu.Lock()
		fl.off = pos
		if entry {
			fl.n--
		}
		if since++; since >= checkpointEvery {
			since = 0
			err = fl.saveOffset(pos)
		}
		fl.mu.Unlock()
		if err != nil {
			return applied, err
		}
	}
	return applied, nil
}

// quarantine keeps a line that is not an entry where a human can find it, so
// that it neither blocks the spool nor silently disappears.
func (fl *spoolFile) quarantine(line []byte) error {
	f, err := os.OpenFile(fl.path+corruptSuffix, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("spool: quarantine: %w", err)
	}
	_, err = f.Write(line)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("spool: quarantine: %w", err)
	}
	return nil
}

// finish makes the progress of a Replay durable: it compacts the file when
// everything was applied or when most of it is dead, and otherwise records the
// applied offset.
func (fl *spoolFile) finish(caughtUp bool) error {
	fl.syncMu.Lock()
	defer fl.syncMu.Unlock()
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.closed || fl.off == 0 {
		return nil
	}
	if caughtUp || 2*fl.off >= fl.size {
		return fl.compact()
	}
	if fl.off != fl.savedOff {
		return fl.saveOffset(fl.off)
	}
	return nil
}

// compact replaces the file with its entries not yet applied. It holds syncMu
// and mu, so no append can land in the old file after it has been copied.
func (fl *spoolFile) compact() error {
	tmp := fl.path + tmpSuffix
	nf, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("spool: compact: %w", err)
	}
	fail := func(err error) error {
		nf.Close()
		os.Remove(tmp)
		return fmt.Errorf("spool: compact: %w", err)
	}
	keep := fl.size - fl.off
	if _, err := io.Copy(nf, io.NewSectionReader(fl.f, fl.off, keep)); err != nil {
		return fail(err)
	}
	if err := nf.Sync(); err != nil {
		return fail(err)
	}
	// Reset the offset before the rename: a crash in between then finds the
	// old file with offset 0 and applies it all again (allowed), where the
	// other order could find the new file with the old offset and skip
	// entries (not allowed).
	if err := fl.saveOffset(0); err != nil {
		return fail(err)
	}
	fl.test("offset-reset")
	if err := os.Rename(tmp, fl.path); err != nil {
		err = fail(err)
		// The old file is still in place. Best effort: if this fails, the
		// next finish tries again; in memory the offset is right either way.
		_ = fl.saveOffset(fl.off)
		return err
	}
	fl.test("renamed")
	// The rename is done, so the new file is the spool whatever syncDir says;
	// a crash before the directory is durable leaves the old file with
	// offset 0, which is safe.
	derr := syncDir(filepath.Dir(fl.path))
	fl.f.Close()
	fl.f, fl.size, fl.off = nf, keep, 0
	fl.synced = fl.written // all written data is in nf, which was fsynced
	return derr
}

// saveOffset durably records that entries before off are applied, by writing
// a temp file and renaming it over path.applied. mu must be held.
func (fl *spoolFile) saveOffset(off int64) error {
	if fl.closed {
		return errSpoolClosed
	}
	path := fl.path + appliedSuffix
	tmp := path + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("spool: save offset: %w", err)
	}
	_, err = f.WriteString(strconv.FormatInt(off, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool: save offset: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return err
	}
	fl.savedOff = off
	fl.test("offset-saved")
	return nil
}

func (fl *spoolFile) test(stage string) {
	if fl.hook != nil {
		fl.hook(stage)
	}
}
