// Package childproc sets up the child processes that tests and
// cmd/aitbench start (redis-server, stripe-mock, caddy, the mock upstream).
package childproc
