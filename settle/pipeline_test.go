package settle

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/internal/testredis"
)

// fundedKey starts a redis-server holding an account for user with credit
// nanos and an active key, and returns the server, a client, the accounts
// and the key's hash.
func fundedKey(t *testing.T, user string, credit money.Nanos) (*testredis.Server, *redis.Client, *billing.Accounts, string) {
	t.Helper()
	srv := testredis.Start(t)
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	acc := billing.NewAccounts(rdb)
	if err := acc.EnsureAccount(ctx, user); err != nil {
		t.Fatal(err)
	}
	if _, err := acc.Credit(ctx, user, credit); err != nil {
		t.Fatal(err)
	}
	hash := billing.HashKey("sk-test-" + user)
	if err := acc.PutKey(ctx, hash, billing.KeyRecord{ID: "k-" + user, User: user, Active: true}); err != nil {
		t.Fatal(err)
	}
	return srv, rdb, acc, hash
}

// target names srv as the gateway names a Redis target.
func target(srv *testredis.Server) string { return "redis|" + srv.URL() }

// startPipeline starts a Pipeline on srv with files in dir, with a client
// of its own that, as the gateway's, never retries a command. stop stops
// the pipeline and closes the client, as the gateway's last release does.
func startPipeline(t *testing.T, srv *testredis.Server, dir string) (p *Pipeline, stop func()) {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	p = New(client, Config{Dir: dir, Target: target(srv)})
	if err := p.Start(); err != nil {
		client.Close()
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			p.Stop()
			client.Close()
		})
	}
	t.Cleanup(stop)
	return p, stop
}

// waitBalance waits until user's balance is want and nothing is held, and
// fails the test if it ever drops below want (a settlement debited twice).
func waitBalance(t *testing.T, acc *billing.Accounts, user string, want money.Nanos, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		bal, held, err := acc.Balance(context.Background(), user)
		if err != nil {
			t.Fatal(err)
		}
		if bal < want {
			t.Fatalf("balance %d: debited more than once (want %d)", bal, want)
		}
		if bal == want && held == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("balance %d held %d after %v: %s (want balance %d, held 0)", bal, held, within, what, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestJournalLeftoverIsSettledAtStart plays a process killed after it wrote
// a settlement ahead and before Redis took it: the next start settles it,
// once.
func TestJournalLeftoverIsSettledAtStart(t *testing.T) {
	const credit = 1_000_000_000
	srv, rdb, acc, hash := fundedKey(t, "u1", credit)
	dir := t.TempDir()
	ctx := context.Background()
	g, err := acc.Authorize(ctx, billing.AuthRequest{KeyHash: hash, Model: "m", Hold: 500_000, RequestID: "req_journal1"})
	if err != nil {
		t.Fatal(err)
	}

	// The killed process: the settlement is in its journal, never Done
	// (its lock went with it).
	spath := spoolPath(dir, target(srv))
	jr, err := openJournal(filepath.Dir(spath), journalPrefix(spath))
	if err != nil {
		t.Fatal(err)
	}
	rec := recordOf(g)
	rec.Cost, rec.Tokens, rec.Usage = 1234, 17, json.RawMessage(`{"request_id":"req_journal1"}`)
	rec.Mode = rec.mode(replayAttempt)
	if _, err := jr.Append(rec.AppendJSON(nil)); err != nil {
		t.Fatal(err)
	}
	// Its end released the lock; a file with a record not Done stays.
	if err := jr.Close(); err != nil {
		t.Fatal(err)
	}

	for range 2 { // a second start must not debit again
		_, stop := startPipeline(t, srv, dir)
		waitBalance(t, acc, "u1", credit-1234, 10*time.Second, "the journal's settlement was not applied")
		if n, err := billing.UsageBacklog(ctx, rdb); err != nil || n != 1 {
			t.Fatalf("usage stream holds %d records (%v), want 1", n, err)
		}
		stop()
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "journal-*.log")); len(left) != 0 {
		t.Fatalf("journal files left after a clean stop: %v", left)
	}
}

// TestFileNames pins the names of the spool and journal files: a build
// that named them otherwise would not find what an older one left.
func TestFileNames(t *testing.T) {
	spath := spoolPath("/var/lib/aitoken", "redis|redis://127.0.0.1:6379/0")
	if want := "/var/lib/aitoken/spool-682d3c9595e58051.jsonl"; spath != want {
		t.Errorf("spool file %s, want %s", spath, want)
	}
	if got, want := journalPrefix(spath), "journal-682d3c9595e58051"; got != want {
		t.Errorf("journal prefix %s, want %s", got, want)
	}
	p := New(nil, Config{Dir: "/var/lib/aitoken", Target: "redis|redis://127.0.0.1:6379/0"})
	if p.spoolPath != spath || p.journalDir != "/var/lib/aitoken" || p.journalPrefix != "journal-682d3c9595e58051" {
		t.Errorf("pipeline files %s, %s, %s", p.spoolPath, p.journalDir, p.journalPrefix)
	}
}

// oldRecord is a settlement as the gateway wrote it before records had a
// version (an untagged billing.Grant), for request id and key k-u3 of
// user u3, with a hold of 500000 nanos and a cost of 1234.
func oldRecord(id string) string {
	return `{"grant":{"KeyID":"k-u3","User":"u3","RequestID":"` + id + `","Hold":"0.000500000",` +
		`"Key":{"ID":"k-u3","User":"u3","TPM":0},"NoHold":false},"cost":"0.000001234","tokens":17,` +
		`"record":{"request_id":"` + id + `"},"mode":"replay"}`
}

// TestOldRecordsAreReplayed starts on the files an older build left: a
// settlement in its journal and one in its spool, both in the unversioned
// format. Each is settled, once, under the file names that build used.
func TestOldRecordsAreReplayed(t *testing.T) {
	const credit = 1_000_000_000
	srv, rdb, acc, hash := fundedKey(t, "u3", credit)
	dir := t.TempDir()
	ctx := context.Background()
	for _, id := range []string{"req_oldjournal", "req_oldspool"} {
		if _, err := acc.Authorize(ctx, billing.AuthRequest{KeyHash: hash, Model: "m", Hold: 500_000, RequestID: id}); err != nil {
			t.Fatal(err)
		}
	}
	// The names the older build gave its files for this target
	// (TestFileNames pins them).
	spath := spoolPath(dir, target(srv))
	journalFile := filepath.Join(dir, journalPrefix(spath)+"-0.log")
	if err := os.WriteFile(journalFile, []byte(oldRecord("req_oldjournal")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spath, []byte(`{"id":"req_oldspool","p":`+oldRecord("req_oldspool")+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for range 2 { // a second start must not debit again
		p, stop := startPipeline(t, srv, dir)
		waitBalance(t, acc, "u3", credit-2*1234, 10*time.Second, "the old settlements were not applied")
		if n, err := billing.UsageBacklog(ctx, rdb); err != nil || n != 2 {
			t.Fatalf("usage stream holds %d records (%v), want 2", n, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for p.Spooled() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d settlements still in the spool", p.Spooled())
			}
			time.Sleep(10 * time.Millisecond)
		}
		stop()
	}
	if _, err := os.Stat(journalFile); !os.IsNotExist(err) {
		t.Fatalf("old journal file still there: %v", err)
	}
}

// TestWorkersBatchAndSurviveAFlushedScriptCache settles many requests
// at once through the workers (pipelined batches) on a Redis whose script
// cache was flushed: each is applied exactly once, and the journal empties.
func TestWorkersBatchAndSurviveAFlushedScriptCache(t *testing.T) {
	const credit, n, cost = 1_000_000_000, 300, 1000
	srv, rdb, acc, hash := fundedKey(t, "u2", credit)
	dir := t.TempDir()
	ctx := context.Background()
	grants := make([]billing.Grant, n)
	for i := range grants {
		g, err := acc.Authorize(ctx, billing.AuthRequest{KeyHash: hash, Model: "m", Hold: 5000, RequestID: billing.NewRequestID()})
		if err != nil {
			t.Fatal(err)
		}
		grants[i] = g
	}
	p, _ := startPipeline(t, srv, dir)
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, g := range grants {
		rec := recordOf(g)
		rec.Cost, rec.Tokens, rec.Usage = cost, 1, json.RawMessage(`{"request_id":"`+g.RequestID+`"}`)
		wg.Add(1)
		p.Later(rec, nil, wg.Done)
	}
	idle := make(chan struct{})
	go func() { wg.Wait(); close(idle) }()
	select {
	case <-idle:
	case <-time.After(15 * time.Second):
		t.Fatal("settlements still pending after 15s")
	}
	bal, held, err := acc.Balance(ctx, "u2")
	if err != nil || bal != credit-n*cost || held != 0 {
		t.Fatalf("balance %d held %d (%v), want %d and 0", bal, held, err, credit-n*cost)
	}
	if got, _ := billing.UsageBacklog(ctx, rdb); got != n {
		t.Fatalf("usage stream holds %d records, want %d", got, n)
	}
	if pending := p.Pending(); pending != 0 {
		t.Fatalf("journal still holds %d settlements", pending)
	}
	if p.Spooled() != 0 {
		t.Fatalf("%d settlements went to the spool", p.Spooled())
	}
}
