// Package e2e runs real caddy processes built from ./internal/testcaddy
// against a real redis-server and the bundled mock provider, and checks what
// only a separate process can show: a kill -9 under load loses no usage
// record, and two nodes sharing one Redis bill into one ledger.
//
//	go test -race ./e2e/
//
// TestMain builds the caddy binary once (without -race; the test binary
// itself runs with it), starts one redis-server and the mock upstream behind
// httptest. Every caddy process gets its own free loopback ports, storage,
// spool directory and HOME.
package e2e
