package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// admin sends a JSON request to caddy's admin API and decodes the answer.
func (e *env) admin(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.adminURL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	c := e.adminClient
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("admin %s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// mintKey creates the bench user, credits it far more than the run can
// spend, and issues its key.
func (e *env) mintKey(ctx context.Context) error {
	// Balances are exact up to 2^53 nanos (about 9 million units) per account.
	key, err := e.mintUser(ctx, "bench", "5000000.00")
	e.key = key
	return err
}

// mintUser creates user id, credits it amount and issues its key, all
// through the admin API, and returns the key.
func (e *env) mintUser(ctx context.Context, id, amount string) (string, error) {
	if err := e.admin(ctx, "POST", "/aitoken/users", map[string]string{"id": id, "name": "aitbench"}, nil); err != nil {
		return "", err
	}
	credit := map[string]string{"amount": amount, "reason": "aitbench"}
	if err := e.admin(ctx, "POST", "/aitoken/users/"+id+"/credits", credit, nil); err != nil {
		return "", err
	}
	var k struct {
		Key string `json:"key"`
	}
	if err := e.admin(ctx, "POST", "/aitoken/keys", map[string]string{"user": id, "name": "aitbench"}, &k); err != nil {
		return "", err
	}
	if k.Key == "" {
		return "", errors.New("admin POST /aitoken/keys: no key in the answer")
	}
	return k.Key, nil
}

// mintCustomers creates n customers (users bench-c0000, …), each credited
// customerCredit and given a key, conc at a time, and returns their keys.
func (e *env) mintCustomers(ctx context.Context, n, conc int) ([]string, error) {
	keys := make([]string, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(conc, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				k, err := e.mintUser(ctx, fmt.Sprintf("bench-c%04d", i), customerCredit)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("customer %d: %w", i, err) })
					return
				}
				keys[i] = k
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return keys, ctx.Err()
}

// customerCredit is each customer's balance: far more than the scenario
// spends, and enough that a node leases its largest lease.
const customerCredit = "1000.00"
