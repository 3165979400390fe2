// Package usagelog is the SQLite system of record of caddy-aitoken: users,
// API keys (hashes only), ledger entries and usage rows, plus the flusher that
// moves usage records from the Redis stream into SQLite in batches.
package usagelog

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Errors reported by the Store. Callers test them with errors.Is; the
// returned errors wrap them with the name of what was missing or duplicated.
var (
	// ErrNotFound reports that a user, key or usage record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists reports a duplicate ID, key hash or ledger reference.
	ErrExists = errors.New("already exists")
	// ErrInvalid reports an argument the Store refuses before touching the
	// database, such as an empty ID or an unknown status.
	ErrInvalid = errors.New("invalid argument")
)

// readConns is the size of the read-only pool. Reads in WAL mode run in
// parallel with the single writer, so a few connections are enough for the
// admin API and reconcile.
const readConns = 4

// Store is the SQLite ledger. All writes go through one connection (SQLite
// allows one writer at a time, and queuing in Go is cheaper than
// SQLITE_BUSY retries); queries use a separate read-only pool so that they
// never wait behind the flusher. A Store is safe for concurrent use.
type Store struct {
	wr  *sql.DB // writer: MaxOpenConns 1, BEGIN IMMEDIATE
	rd  *sql.DB // readers: query_only
	ins usageInserts
}

// Open opens (creating if needed) the SQLite database at path and brings its
// schema up to date. The ledger holds personal data and money: its file and
// SQLite's -wal and -shm files beside it are made readable by the owner
// only (0600), even if they existed with wider modes, and missing folders
// on the way to it are created 0700 (an existing folder is left as it is). The database runs in WAL mode with synchronous=NORMAL,
// foreign keys on and a 5s busy timeout. path must name a file: ":memory:"
// is refused because the writer and the readers would see different
// databases.
func Open(path string) (*Store, error) {
	if path == "" || path == ":memory:" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open ledger %q: path must be a plain file name: %w", path, ErrInvalid)
	}
	if err := prepareFiles(path); err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	const common = "_busy_timeout=5000&_foreign_keys=on&_synchronous=NORMAL"
	wr, err := sql.Open("sqlite", path+"?"+common+"&_journal_mode=WAL&_txlock=immediate"+writerPragmas)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	wr.SetMaxOpenConns(1)
	wr.SetMaxIdleConns(1)
	wr.SetConnMaxLifetime(0)
	wr.SetConnMaxIdleTime(0)
	ctx := context.Background()
	if err := migrate(ctx, wr); err != nil {
		wr.Close()
		return nil, err
	}
	// The readers are opened after the writer has switched the file to WAL
	// and created the schema, so they never see a half-made database.
	rd, err := sql.Open("sqlite", path+"?"+common+"&_query_only=1")
	if err != nil {
		wr.Close()
		return nil, fmt.Errorf("open ledger readers: %w", err)
	}
	rd.SetMaxOpenConns(readConns)
	rd.SetMaxIdleConns(readConns)
	if err := rd.PingContext(ctx); err != nil {
		wr.Close()
		rd.Close()
		return nil, fmt.Errorf("open ledger readers: %w", err)
	}
	return &Store{wr: wr, rd: rd}, nil
}

// writerPragmas size the writer's page cache and WAL for the usage inserts.
// Each transaction dirties a page of the per-user index for every user in
// it, the same pages again and again under steady load:
//   - a page cache of up to 16 MiB (SQLite's default is 2 MiB) keeps them,
//     with the b-trees' upper levels, in memory, instead of reading them back
//     and writing them out before the commit;
//   - a checkpoint every 10,000 WAL pages (about 40 MiB; default 1,000) copies
//     a page rewritten by many transactions to the database once.
//
// On a ledger of 300,000 rows of 1,000 users, this doubles the insert rate
// (BenchmarkInsertLargeLedger). A 64 MiB cache inserted no faster there;
// with 10,000 users it was faster at 5,000 rows per transaction (15k
// against 17k ns a row) and slower at 1,000 (23k against 18k). It takes
// four times the memory, and each page a growing cache takes first costs
// page faults: on a new ledger, rows cost 20 % more CPU until it was full
// (BenchmarkInsertUsage). 8 MiB was 40 % slower at 5,000 rows per
// transaction.
const writerPragmas = "&_pragma=cache_size(-16384)&_pragma=wal_autocheckpoint(10000)"

// ledgerFileMode is the mode of the ledger's files; ledgerDirMode of the
// folders Open creates.
const (
	ledgerFileMode os.FileMode = 0o600
	ledgerDirMode  os.FileMode = 0o700
)

// prepareFiles creates the folders on the way to path (0700) and the
// database file (0600) when missing, and takes the group and other bits off
// the database and its -wal, -shm and -journal files that exist. SQLite
// gives the -wal and -shm files it creates the mode of the database file.
func prepareFiles(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), ledgerDirMode); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, ledgerFileMode)
	if err != nil {
		return err
	}
	err = tighten(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		f, err := os.OpenFile(path+suffix, os.O_RDONLY, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		err = tighten(f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// tighten takes the group and other permission bits off an open file.
func tighten(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Mode().Perm()&0o077 == 0 {
		return nil
	}
	return bestEffort(f.Chmod(st.Mode().Perm() &^ 0o077))
}

// Close closes both connection pools. It does not wait for a Flusher: stop
// the Flusher first.
func (s *Store) Close() error {
	return errors.Join(s.closeInserts(), s.rd.Close(), s.wr.Close())
}

// migrate applies the migrations not yet recorded in schema_migrations, each
// in its own transaction together with its version row.
func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var have int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("migrate: database schema version %d is newer than this build (%d)", have, len(migrations))
	}
	for i := have; i < len(migrations); i++ {
		version := i + 1
		err := inTx(ctx, db, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
				version, time.Now().UnixNano())
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate to version %d: %w", version, err)
		}
	}
	return nil
}

// inTx runs fn in a transaction on db and commits it, or rolls it back when
// fn fails.
func inTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// constraint returns the extended SQLite result code of a constraint
// violation in err, or 0 when err is something else.
func constraint(err error) int {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return 0
	}
	switch c := se.Code(); c {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return c
	}
	return 0
}

func isDuplicate(err error) bool {
	c := constraint(err)
	return c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || c == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}

func isForeignKey(err error) bool {
	return constraint(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// newID returns prefix followed by 16 random hex digits.
func newID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return prefix + hex.EncodeToString(b[:])
}

// Times are stored as INTEGER Unix nanoseconds (UTC): exact, compact and
// ordered, which RFC 3339 text with trimmed fractions is not.

func unixNanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func nullNanos(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}
}

func fromNullNanos(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

// nullString maps "" to SQL NULL, for optional unique columns.
func nullString(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
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
