package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
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
	resp, err := http.DefaultClient.Do(req)
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
	if err := e.admin(ctx, "POST", "/aitoken/users", map[string]string{"id": "bench", "name": "aitbench"}, nil); err != nil {
		return err
	}
	// Balances are exact up to 2^53 nanos (about 9 million units) per account.
	credit := map[string]string{"amount": "5000000.00", "reason": "aitbench"}
	if err := e.admin(ctx, "POST", "/aitoken/users/bench/credits", credit, nil); err != nil {
		return err
	}
	var k struct {
		Key string `json:"key"`
	}
	if err := e.admin(ctx, "POST", "/aitoken/keys", map[string]string{"user": "bench", "name": "aitbench"}, &k); err != nil {
		return err
	}
	if k.Key == "" {
		return errors.New("admin POST /aitoken/keys: no key in the answer")
	}
	e.key = k.Key
	return nil
}
