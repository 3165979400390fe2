package main

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// pingFloor times n sequential PINGs from this process to the bench Redis
// with go-redis: the machine's floor for one Redis round trip, which the
// aitoken route pays once before forwarding (authorize) on top of bare.
func pingFloor(ctx context.Context, addr string, n int) (pcts, error) {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return pcts{}, err
	}
	d := make([]time.Duration, 0, n)
	for range max(n, 1) {
		start := time.Now()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return pcts{}, err
		}
		d = append(d, time.Since(start))
	}
	return percentiles(d), nil
}
