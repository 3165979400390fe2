package billing

import "context"

// opKey is the context key naming the operation a Redis round trip is for.
type opKey struct{}

// Operations, as labels of their Redis round trips.
const (
	OpAuthorize = "authorize"
	OpSettle    = "settle"
	// OpLease labels the background work of balance leases (take, refill,
	// renew, give back): never on a request's path.
	OpLease = "lease"
)

// WithOp labels the Redis round trips made with ctx as op, for a client
// hook that measures them (see OpOf).
func WithOp(ctx context.Context, op string) context.Context {
	return context.WithValue(ctx, opKey{}, op)
}

// OpOf returns the label WithOp gave ctx, or "" if none.
func OpOf(ctx context.Context) string {
	op, _ := ctx.Value(opKey{}).(string)
	return op
}
