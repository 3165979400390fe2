package usagelog

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// This file is the ledger's hot path: storing batches of usage rows. A
// row costs a few microseconds of SQLite work, so what surrounds it counts
// as much: the rows go through the driver connection itself (database/sql
// would copy every batch's arguments once more), with multi-row INSERTs
// prepared once per Store and reused by every batch.

// usageColumnCount is the number of usageColumns.
const usageColumnCount = 21

// insertChunk is the most rows one INSERT statement carries: one statement
// per row spends most of its time crossing into the driver, many rows per
// statement amortise that (21 columns × 64 rows stays far below SQLite's
// 32766 bound variables). A batch is stored in full chunks, then in
// chunks of 32, 16, …, 1 rows for what is left, so that insertSizes
// statements serve any batch.
const (
	insertChunk = 64
	insertSizes = 7 // 64, 32, 16, 8, 4, 2, 1
)

// insertUsageSQL returns a multi-row INSERT OR IGNORE for n rows.
func insertUsageSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT OR IGNORE INTO usage (` + usageColumns + `) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`)
	}
	return b.String()
}

// InsertUsage stores recs in one transaction and returns how many were new.
// A record whose request_id is already stored is skipped, so replaying a
// batch is harmless. Records without a request_id, user or time are refused
// with ErrInvalid before anything is written.
func (s *Store) InsertUsage(ctx context.Context, recs []Record) (int, error) {
	for i := range recs {
		if err := recs[i].validate(); err != nil {
			return 0, err
		}
	}
	return s.insertBatch(ctx, [][]Record{recs}, nil)
}

// reject is a stream entry that could not be read as a Record, kept as it
// arrived so that nothing is lost.
type reject struct {
	stream, entryID, raw, reason string
}

// insertBatch writes valid records, given in parts, and rejects in one
// transaction and returns how many records were new.
func (s *Store) insertBatch(ctx context.Context, recs [][]Record, rejects []reject) (int, error) {
	if len(rejects) == 0 && !slices.ContainsFunc(recs, func(p []Record) bool { return len(p) > 0 }) {
		return 0, nil
	}
	conn, err := s.wr.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("insert usage: %w", err)
	}
	defer conn.Close()
	inserted := 0
	err = conn.Raw(func(dc any) error {
		var err error
		inserted, err = s.ins.insert(ctx, dc, recs, rejects)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("insert usage: %w", err)
	}
	return inserted, nil
}

// writerConn is what the insert path needs of the SQLite driver's
// connection.
type writerConn interface {
	driver.ConnPrepareContext
	driver.ConnBeginTx
	driver.ExecerContext
}

// execStmt is a prepared statement run with driver arguments.
type execStmt interface {
	driver.Stmt
	driver.StmtExecContext
}

// queryStmt is a prepared query run with driver arguments.
type queryStmt interface {
	driver.Stmt
	driver.StmtQueryContext
}

// noIPUsersSQL reads the users who opted out of IP logging (noIPUsers).
const noIPUsersSQL = `SELECT id FROM users INDEXED BY users_no_ip WHERE ip_logging = 0`

// usageInserts holds the writer connection's prepared INSERTs of usage rows
// and the argument array they are run with; both live as long as the Store.
type usageInserts struct {
	mu    sync.Mutex
	conn  writerConn            // the connection stmts were prepared on
	stmts [insertSizes]execStmt // stmts[i] inserts insertChunk>>i rows
	noIP  queryStmt             // noIPUsersSQL
	args  [insertChunk * usageColumnCount]driver.NamedValue
}

// prepare readies the statements on conn. The writer pool keeps its one
// connection for the life of the Store; should it ever open another (the
// old one broke), the statements are prepared again there, and the old
// ones are left to the old connection.
func (u *usageInserts) prepare(ctx context.Context, conn writerConn) error {
	if u.conn == conn {
		return nil
	}
	u.conn, u.stmts, u.noIP = nil, [insertSizes]execStmt{}, nil
	st, err := conn.PrepareContext(ctx, noIPUsersSQL)
	if err != nil {
		return err
	}
	noIP, ok := st.(queryStmt)
	if !ok {
		st.Close()
		return errors.New("sqlite driver statement cannot query with a context")
	}
	var stmts [insertSizes]execStmt
	for i := range stmts {
		st, err := conn.PrepareContext(ctx, insertUsageSQL(insertChunk>>i))
		if err == nil {
			var ok bool
			if stmts[i], ok = st.(execStmt); !ok {
				st.Close()
				err = errors.New("sqlite driver statement cannot run with a context")
			}
		}
		if err != nil {
			for _, st := range stmts[:i] {
				st.Close()
			}
			noIP.Close()
			return err
		}
	}
	u.conn, u.stmts, u.noIP = conn, stmts, noIP
	for i := range u.args {
		u.args[i].Ordinal = i + 1
	}
	return nil
}

// closeInserts finalizes the writer's prepared INSERTs, if any, before its
// connection closes.
func (s *Store) closeInserts() error {
	s.ins.mu.Lock()
	prepared := s.ins.conn != nil
	s.ins.mu.Unlock()
	if !prepared {
		return nil
	}
	conn, err := s.wr.Conn(context.Background())
	if err != nil {
		return fmt.Errorf("close ledger: %w", err)
	}
	defer conn.Close()
	return conn.Raw(s.ins.close)
}

// close finalizes the statements prepared on dc, the writer's driver
// connection.
func (u *usageInserts) close(dc any) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn == nil || u.conn != dc {
		return nil
	}
	var errs []error
	for _, st := range u.stmts {
		errs = append(errs, st.Close())
	}
	errs = append(errs, u.noIP.Close())
	u.conn, u.stmts, u.noIP = nil, [insertSizes]execStmt{}, nil
	return errors.Join(errs...)
}

// insert stores recs (in parts) and rejects in one transaction on dc, the
// writer's driver connection, and returns how many records were new.
func (u *usageInserts) insert(ctx context.Context, dc any, recs [][]Record, rejects []reject) (n int, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	conn, ok := dc.(writerConn)
	if !ok {
		return 0, fmt.Errorf("sqlite driver connection %T lacks a method the insert path needs", dc)
	}
	if err := u.prepare(ctx, conn); err != nil {
		return 0, err
	}
	tx, err := conn.BeginTx(ctx, driver.TxOptions{})
	if err != nil {
		return 0, err
	}
	done := false
	defer func() {
		if !done { // an error, or a panic: leave the connection out of any transaction
			_ = tx.Rollback()
		}
	}()
	defer func() { // keep no record's strings alive between batches
		for i := range u.args {
			u.args[i].Value = nil
		}
	}()
	var noIP map[string]bool
	if slices.ContainsFunc(recs, hasClientIP) {
		if noIP, err = noIPUsers(ctx, u.noIP); err != nil {
			return 0, err
		}
	}
	for _, part := range recs {
		m, err := u.write(ctx, part, noIP)
		if err != nil {
			return 0, err
		}
		n += m
	}
	if err := writeRejects(ctx, conn, rejects, u.args[:5]); err != nil {
		return 0, err
	}
	done = true // Commit rolls back itself when it fails
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	return n, nil
}

// hasClientIP reports whether a record of recs carries a client IP.
func hasClientIP(recs []Record) bool {
	return slices.ContainsFunc(recs, func(r Record) bool { return r.ClientIP != "" })
}

// write inserts recs, with the client IP left out for the users in noIP,
// and returns how many were new.
func (u *usageInserts) write(ctx context.Context, recs []Record, noIP map[string]bool) (int, error) {
	inserted := 0
	var box rowBoxes // the last row's boxed values, for the columns that repeat
	for rest := recs; len(rest) > 0; {
		size := 0 // the largest statement not longer than rest
		for insertChunk>>size > len(rest) {
			size++
		}
		chunk := rest[:insertChunk>>size]
		rest = rest[len(chunk):]
		args := u.args[:len(chunk)*usageColumnCount]
		for i := range chunk {
			r := &chunk[i]
			ip := r.ClientIP
			if noIP[r.User] {
				ip = "" // the user opted out (or was erased): see noIPUsers
			}
			a := args[i*usageColumnCount : (i+1)*usageColumnCount]
			a[0].Value, a[1].Value = r.RequestID, unixNanos(r.Time)
			a[2].Value, a[3].Value = box.user.of(r.User), box.keyID.of(r.KeyID)
			a[4].Value, a[5].Value = box.model.of(r.Model), box.endpoint.of(r.Endpoint)
			a[6].Value, a[7].Value, a[8].Value = r.Stream, int64(r.Status), box.outcome.of(r.Outcome)
			a[9].Value, a[10].Value = box.counts[0].of(r.InputTokens), box.counts[1].of(r.CachedInputTokens)
			a[11].Value, a[12].Value = box.counts[2].of(r.CacheWriteTokens), box.counts[3].of(r.OutputTokens)
			a[13].Value, a[14].Value = box.counts[4].of(r.ReasoningTokens), box.counts[5].of(int64(r.Cost))
			a[15].Value, a[16].Value = box.currency.of(r.Currency), r.Estimated
			a[17].Value, a[18].Value = box.counts[6].of(r.DurationMS), box.counts[7].of(r.TTFTMS)
			a[19].Value, a[20].Value = box.ip.of(ip), r.Clamped
		}
		res, err := u.stmts[size].ExecContext(ctx, args)
		if err != nil {
			return 0, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, err
		}
		inserted += int(n)
	}
	return inserted, nil
}

// rowBoxes keeps, per column, the driver value of the row written last.
// Putting a string or an integer above 255 into a driver.Value allocates,
// and most columns repeat from row to row (a batch is mostly a few
// customers on one model and endpoint): a repeated value reuses the boxed
// one. Request IDs and times differ on every row and are boxed each time.
type rowBoxes struct {
	user, keyID, model, endpoint, outcome, currency, ip boxed[string]
	counts                                              [8]boxed[int64]
}

// boxed is one column's last value and its boxed form.
type boxed[T comparable] struct {
	v   T
	box driver.Value
}

// of returns v as a driver.Value, the one boxed last time when v repeats.
func (b *boxed[T]) of(v T) driver.Value {
	if b.box == nil || b.v != v {
		b.v, b.box = v, v
	}
	return b.box
}

// writeRejects stores rejected stream entries, with args as room for the
// arguments of one (their Ordinals set).
func writeRejects(ctx context.Context, conn driver.ExecerContext, rejects []reject, args []driver.NamedValue) error {
	now := time.Now().UnixNano()
	for _, rj := range rejects {
		args[0].Value, args[1].Value, args[2].Value, args[3].Value, args[4].Value =
			rj.stream, rj.entryID, rj.raw, rj.reason, now
		if _, err := conn.ExecContext(ctx, `INSERT OR IGNORE INTO usage_rejects
			(stream, entry_id, raw, reason, received_at) VALUES (?, ?, ?, ?, ?)`, args); err != nil {
			return err
		}
	}
	return nil
}

// noIPUsers returns the users who opted out of IP logging (erased users'
// late rows are ScrubErased's). It reads the partial index users_no_ip, which holds only them.
//
// The opt-out is applied here, as rows are inserted, rather than when the
// gateway writes the record: the gateway would need the flag on every key
// record in Redis, rewritten on each change, while this costs one small
// indexed read per batch (prepared once), in the batch's own transaction
// (so a change is never half seen), and nothing per request. Until the batch is stored the
// record, with its IP, lives only in the usage stream and the settlement
// journal, as every record does.
func noIPUsers(ctx context.Context, q queryStmt) (map[string]bool, error) {
	rows, err := q.QueryContext(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out map[string]bool
	dest := make([]driver.Value, 1)
	for {
		err := rows.Next(dest)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		id, ok := dest[0].(string)
		if !ok {
			return nil, fmt.Errorf("users.id is %T, not text", dest[0])
		}
		if out == nil {
			out = make(map[string]bool)
		}
		out[id] = true
	}
}
