package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// ledgerDB is the Redis database the flush benchmark uses, apart from the
// gateway's (0), whose own flusher must not take these records.
const ledgerDB = 1

// benchRecord is a usage record as the gateway's settlement writes it
// (settle.Bill): a completed chat completion of one of 100 users.
func benchRecord(i int, now time.Time) usagelog.Record {
	user := "user-" + strconv.Itoa(i%100)
	return usagelog.Record{
		RequestID:         billing.NewRequestID(),
		Time:              now.Add(time.Duration(i) * time.Millisecond).UTC(),
		User:              user,
		KeyID:             "key_" + user,
		Model:             benchModel,
		Endpoint:          "/v1/chat/completions",
		Stream:            i%2 == 0,
		Status:            200,
		Outcome:           "completed",
		InputTokens:       1200 + int64(i%500),
		CachedInputTokens: 1000,
		OutputTokens:      350 + int64(i%100),
		ReasoningTokens:   0,
		Cost:              money.Nanos(123_456 + i%1000),
		Currency:          "USD",
		DurationMS:        900 + int64(i%300),
		TTFTMS:            120,
		ClientIP:          "203.0.113.7",
	}
}

// fillStream XADDs n records to the usage streams, each to its user's
// shard, pipelined 1000 at a time, exactly as the settlement script writes
// them (field "r", the JSON).
func fillStream(ctx context.Context, rdb *redis.Client, n int) error {
	now := time.Now()
	for done := 0; done < n; {
		batch := min(1000, n-done)
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range batch {
				r := benchRecord(done+i, now)
				b, err := json.Marshal(r)
				if err != nil {
					return err
				}
				p.XAdd(ctx, &redis.XAddArgs{Stream: billing.UsageStreamOf(r.User), Values: []any{billing.UsageField, b}})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("filling the usage stream: %w", err)
		}
		done += batch
	}
	return nil
}

// ledgerFlush fills the usage stream with n records, then starts a ledger
// Flusher configured as the gateway's (caddymodule/pool.go: group
// "ledger", default batch) on a fresh SQLite file, and times how long it
// takes until the stream is empty: the flusher deletes an entry only after
// the transaction that stored it committed. It returns rows per second,
// after checking that SQLite holds all n rows.
func ledgerFlush(ctx context.Context, redisAddr, dir string, n int) (float64, error) {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, DB: ledgerDB})
	defer rdb.Close()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return 0, err
	}
	if err := fillStream(ctx, rdb, n); err != nil {
		return 0, err
	}
	path := filepath.Join(dir, "ledger-flush.db")
	store, err := usagelog.Open(path)
	if err != nil {
		return 0, err
	}
	defer store.Close()
	f := usagelog.NewFlusher(rdb, store, usagelog.FlusherConfig{
		Streams: billing.UsageStreams, Field: billing.UsageField, Group: "ledger", Consumer: "aitbench", Interval: time.Second,
	}, nil)

	start := time.Now()
	f.Start()
	deadline := start.Add(5 * time.Minute)
	for {
		left, err := billing.UsageBacklog(ctx, rdb)
		if err != nil {
			return 0, err
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("ledger flush: %d of %d records still in the stream after 5m", left, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(start)
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := f.Stop(stopCtx); err != nil {
		return 0, err
	}
	rows, err := countUsage(ctx, path)
	if err != nil {
		return 0, err
	}
	if rows != n {
		return 0, fmt.Errorf("ledger flush: SQLite holds %d usage rows, want %d", rows, n)
	}
	return float64(n) / elapsed.Seconds(), nil
}

// countUsage counts the usage rows in the ledger at path.
func countUsage(ctx context.Context, path string) (int, error) {
	db, err := sql.Open("sqlite", path+"?_query_only=1")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int
	err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM usage").Scan(&n)
	return n, err
}
