// Package layout holds the test that keeps the module's imports pointing
// down its layers (see docs/architecture.md). It is a package of its own
// so that the test binary does not link Caddy.
package layout
