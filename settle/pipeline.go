// Package settle carries each metered request's settlement from the end of
// its response into Redis, and never drops one.
//
// Bill prices a response and builds its Record. A Pipeline writes the
// record ahead to a local journal before the response ends, and its
// workers apply records to Redis in batches, off the client's path. A
// record Redis could not take goes to a local append-only spool, whose
// replayer applies it idempotently once Redis is back; a process that
// stopped with records in its journal has them moved to the spool at the
// next start.
package settle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// Config says where a Pipeline keeps its files, and whom it tells.
type Config struct {
	// Dir holds the spool and journal files.
	Dir string
	// Target names the Redis target the records are for (its URL, say).
	// The files are named by a hash of it, so each target has its own.
	Target string
	// Log gets the pipeline's messages; nil discards them.
	Log *zap.Logger
	// Hooks are called as records go where they go.
	Hooks Hooks
}

// Hooks let the owner of a Pipeline count what happens to records. A nil
// hook is not called.
type Hooks struct {
	// Spooled is called when a record Redis did not take went to the
	// spool, for replay.
	Spooled func()
	// Lost is called when a record could be put nowhere: Redis, the spool
	// and the journal all failed. Its usage record is gone.
	Lost func()
	// Renewal is how far the settle script of a batch sent at now may
	// renew lease of user (billing.LeaseBatch.Renew); 0 for not at all.
	Renewal func(user, lease string, now time.Time) time.Duration
	// Renewed is called for each lease a settle script sent at sent
	// renewed by renew.
	Renewed func(user, lease string, sent time.Time, renew time.Duration)
}

// Pipeline takes settlements from the end of their response to Redis. New
// builds one without touching anything; Start opens its files and starts
// it; Stop drains it.
type Pipeline struct {
	client        redis.UniversalClient
	log           *zap.Logger
	hooks         Hooks
	spoolPath     string
	journalDir    string
	journalPrefix string

	// Set by Start.
	spool    *spool
	replayer *replayer
	journal  *journal
	workers  *workers
}

// New returns a Pipeline applying records with client.
func New(client redis.UniversalClient, cfg Config) *Pipeline {
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	sp := spoolPath(cfg.Dir, cfg.Target)
	return &Pipeline{client: client, log: log, hooks: cfg.Hooks,
		spoolPath: sp, journalDir: filepath.Dir(sp), journalPrefix: journalPrefix(sp)}
}

// spoolPath is where the records for one Redis target wait.
func spoolPath(dir, target string) string {
	sum := sha256.Sum256([]byte(target))
	return filepath.Join(dir, "spool-"+hex.EncodeToString(sum[:8])+".jsonl")
}

// journalPrefix names the journal files next to the spool.
func journalPrefix(spoolPath string) string {
	return "journal-" + strings.TrimSuffix(strings.TrimPrefix(filepath.Base(spoolPath), "spool-"), ".jsonl")
}

// Start opens the spool and the journal, takes up what stopped processes
// left (journal leftovers into the spool), and starts the workers and the
// spool's replayer. Call it once; again only after it failed.
func (p *Pipeline) Start() error {
	sp, err := openSpool(p.spoolPath)
	if err != nil {
		return fmt.Errorf("spool: %v", err)
	}
	jr, err := openJournal(p.journalDir, p.journalPrefix)
	if err != nil {
		_ = sp.Close()
		return fmt.Errorf("settlement journal: %v", err)
	}
	p.spool, p.journal = sp, jr
	p.replayer = newReplayer(sp, p.replay, time.Second, p.log.Named("spool"))
	p.workers = startWorkers(p)
	if err := p.recoverJournal(p.log.Named("journal")); err != nil {
		// They stay in the journal for the next start.
		p.log.Error("recovering settlements from the journal", zap.Error(err))
	}
	if !p.journal.Owner() {
		p.log.Error("another process uses this spool directory: it keeps its own journal and spool; " +
			"give each process its own spool_dir")
	}
	p.replayer.Start()
	return nil
}

// Stop settles what the workers have queued, stops the replayer (waiting
// a few seconds for an apply in flight) and closes the files. Records
// still in the spool, or in the journal and not done, stay for the next
// Start. Later still works after Stop, as the last resort it describes.
func (p *Pipeline) Stop() {
	p.workers.stop()
	ctx, cancel := context.WithTimeout(context.Background(), replayerStopTimeout)
	defer cancel()
	_ = p.replayer.Stop(ctx)
	_ = p.journal.Close()
	_ = p.spool.Close()
}

// Timeouts: of one attempt to apply records (alone or a batch), and of
// the wait for the replayer at Stop.
const (
	attemptTimeout      = 5 * time.Second
	replayerStopTimeout = 5 * time.Second
)

// Spooled is the number of records waiting in the spool.
func (p *Pipeline) Spooled() int { return p.spool.Len() }

// Pending is the number of records in the journal not yet in Redis or the
// spool.
func (p *Pipeline) Pending() int64 { return p.journal.Pending() }

// recordBufs holds the buffers records are encoded into.
var recordBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Later writes rec ahead to the journal and leaves it to the workers, so
// the response ends without waiting for Redis; a process killed before the
// record lands replays it from the journal at its next start. Without a
// journal (it failed, or the Pipeline stopped) Later settles at once, and
// as a last resort writes the record where the next Start finds it.
//
// ahead, if not nil, runs once the record is safe in the journal and
// before it is handed over: the caller flushes the response there, so the
// client has it before anything else happens. done, if not nil, runs once
// the record is in Redis, in the spool, or left for the next start.
func (p *Pipeline) Later(rec Record, ahead, done func()) {
	if done == nil {
		done = func() {}
	}
	rec.Mode = rec.mode(replayAttempt) // what a replay from the journal uses
	buf := recordBufs.Get().(*[]byte)
	defer recordBufs.Put(buf)
	*buf = rec.AppendJSON((*buf)[:0])
	t, err := p.journal.Append(*buf)
	if err == nil && ahead != nil {
		ahead()
	}
	if err == nil && p.workers.enqueue(job{rec: rec, ticket: t, done: done}) {
		return
	}
	defer done()
	if err != nil {
		p.log.Warn("journal unavailable; settling before the response ends",
			zap.String("request_id", rec.RequestID), zap.Error(err))
	}
	// A request that outlived its config's drain timeout: the client may
	// be closed. Settle now, or leave the record for the next start.
	ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
	defer cancel()
	switch {
	case p.settle(ctx, rec):
		if err == nil {
			p.journal.Done(t)
		}
	case err == nil:
		// It is in the journal, not Done: the next start settles it.
	default:
		if lerr := writeLeftover(p.journalDir, p.journalPrefix, *buf); lerr != nil {
			if p.hooks.Lost != nil {
				p.hooks.Lost()
			}
			p.log.Error("usage record lost: cannot settle, spool or journal it",
				zap.String("request_id", rec.RequestID), zap.String("user", rec.User),
				zap.String("cost", rec.Cost.String()), zap.Error(lerr))
		}
	}
}

// settle makes rec's first attempt, or spools it when Redis cannot take
// it. It reports false when the record is in neither (the spool failed
// too).
func (p *Pipeline) settle(ctx context.Context, rec Record) bool {
	err := p.apply(billing.WithOp(ctx, billing.OpSettle), rec, firstAttempt)
	return err == nil || p.spoolFailed(rec, err)
}

// spoolFailed keeps a record whose attempt failed with err in the spool
// for replay. It reports false when the spool failed too.
func (p *Pipeline) spoolFailed(rec Record, err error) bool {
	p.log.Warn("settling in redis failed; spooling it for replay",
		zap.String("request_id", rec.RequestID), zap.Error(err))
	rec.Mode = rec.mode(replayAttempt)
	if err := p.spool.Append(spoolEntry{ID: rec.RequestID, Payload: rec.AppendJSON(nil)}); err != nil {
		p.log.Error("cannot spool settlement", zap.String("request_id", rec.RequestID), zap.Error(err))
		return false
	}
	if p.hooks.Spooled != nil {
		p.hooks.Spooled()
	}
	p.replayer.Kick()
	return true
}

// recoverJournal moves the records a stopped process left in the journal
// to the spool, whose replayer applies them idempotently.
func (p *Pipeline) recoverJournal(log *zap.Logger) error {
	recs, err := p.journal.Leftovers()
	if err != nil {
		return err
	}
	for _, line := range recs {
		var rec Record
		if err := json.Unmarshal(line, &rec); err != nil || rec.RequestID == "" {
			log.Error("unreadable settlement in the journal; skipped", zap.Int("bytes", len(line)))
			continue
		}
		// The line goes as it is: replay reads every version.
		if err := p.spool.Append(spoolEntry{ID: rec.RequestID, Payload: line}); err != nil {
			return err
		}
	}
	if len(recs) > 0 {
		log.Info("settlements left in the journal by a stopped process spooled for replay", zap.Int("settlements", len(recs)))
	}
	return p.journal.DropLeftovers()
}

// replay applies one spooled record.
func (p *Pipeline) replay(ctx context.Context, e spoolEntry) error {
	var rec Record
	if err := json.Unmarshal(e.Payload, &rec); err != nil {
		// It cannot succeed later either.
		p.log.Error("unreadable settlement in the spool; skipped", zap.String("request_id", e.ID), zap.Error(err))
		return nil
	}
	return p.apply(ctx, rec, replayAttempt)
}

// apply applies one settlement: under its lease by its number, else with
// the mode attempt a takes (a replay reads the mode written with it).
func (p *Pipeline) apply(ctx context.Context, rec Record, a attempt) error {
	accounts := billing.NewAccounts(p.client)
	if rec.Lease != "" {
		_, err := accounts.SettleLease(ctx, rec.User, rec.Lease, []billing.LeaseSettlement{rec.leaseSettlement()})
		return err
	}
	mode := rec.mode(a)
	if a == replayAttempt {
		mode = rec.replayMode()
	}
	_, err := accounts.Settle(ctx, rec.grant(), rec.Cost, rec.Tokens, rec.Usage, mode)
	return err
}
