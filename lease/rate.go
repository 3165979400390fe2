package lease

import (
	"context"
	"sync"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// Rates holds this node's shares of keys' rpm/tpm windows: a node takes a
// slice of a key's window in Redis (so the limit is never passed on any
// number of nodes) and counts the key's requests and tokens from it in
// memory, asking for the next slice when it runs out. A slice left unused
// when its minute ends is lost, so a key may be refused a little before
// its limit (at most a slice per node).
type Rates struct {
	acc *billing.Accounts
	mu  sync.Mutex
	m   map[string]*rateShare
}

// rateShare is one key's share of its current window on this node.
type rateShare struct {
	mu       sync.Mutex
	window   int64 // minute since the epoch
	reqs     int64 // requests left in the share
	toks     int64 // tokens left (may go below 0: a request used more than it counted)
	rused    int64 // the window's requests used in Redis at the last slice
	tused    int64
	lastUsed time.Time
}

// slicesPerNode sizes a slice: a node takes limit / (nodes × this) at a
// time, so nodes that lease at once leave most of the window to others.
const slicesPerNode = 4

// NewRates returns Rates on acc.
func NewRates(acc *billing.Accounts) *Rates {
	return &Rates{acc: acc, m: make(map[string]*rateShare)}
}

// RateRequest is a request to count against a key's limits.
type RateRequest struct {
	User, KeyID string
	RPM, TPM    int64
	// Tokens is what the request may use (counted now, as OpenAI counts
	// max_tokens).
	Tokens int64
	// Nodes is how many nodes share the key's windows.
	Nodes int64
}

// Admit counts one request against its key's limits, from the node's share
// when it has enough, else after taking a new slice from Redis (one round
// trip). A window that cannot give what the request needs answers a
// *billing.RateLimitError; an unreachable Redis, its error.
func (r *Rates) Admit(ctx context.Context, q RateRequest) (billing.RateState, error) {
	now := time.Now()
	win := now.UnixMilli() / 60000
	s := r.share(q.KeyID)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastUsed = now
	if s.window != win {
		s.window, s.reqs, s.toks, s.rused, s.tused = win, 0, 0, 0, 0
	}
	needReq, needTok := int64(0), int64(0)
	if q.RPM > 0 && s.reqs < 1 {
		needReq = 1 - s.reqs
	}
	if q.TPM > 0 && s.toks < q.Tokens {
		needTok = q.Tokens - s.toks
	}
	if needReq > 0 || needTok > 0 {
		nodes := max(q.Nodes, 1)
		t := billing.RateTake{User: q.User, KeyID: q.KeyID, RPM: q.RPM, TPM: q.TPM,
			Window: time.UnixMilli(win * 60000)}
		if q.RPM > 0 {
			t.NeedRequests = needReq
			t.WantRequests = max(needReq, q.RPM/(nodes*slicesPerNode))
		}
		if q.TPM > 0 {
			t.NeedTokens = needTok
			t.WantTokens = max(needTok, q.TPM/(nodes*slicesPerNode))
		}
		g, err := r.acc.TakeRate(billing.WithOp(ctx, billing.OpAuthorize), t)
		if err != nil {
			return billing.RateState{}, err
		}
		s.reqs += g.Requests
		s.toks += g.Tokens
		s.rused, s.tused = g.RequestsUsed, g.TokensUsed
	}
	if q.RPM > 0 {
		s.reqs--
	}
	if q.TPM > 0 {
		s.toks -= q.Tokens
	}
	reset := time.UnixMilli((win + 1) * 60000).Sub(now)
	st := billing.RateState{Reset: reset}
	if q.RPM > 0 {
		st.RequestLimit, st.RequestsLeft = q.RPM, max(q.RPM-s.rused+s.reqs, 0)
	}
	if q.TPM > 0 {
		st.TokenLimit, st.TokensLeft = q.TPM, max(q.TPM-s.tused+s.toks, 0)
	}
	return st, nil
}

// Used counts tokens a request used beyond what its admission counted
// against the key's share of the window it was admitted in.
func (r *Rates) Used(keyID string, extra int64) {
	if extra <= 0 {
		return
	}
	s := r.share(keyID)
	s.mu.Lock()
	s.toks -= extra
	s.mu.Unlock()
}

func (r *Rates) share(keyID string) *rateShare {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.m[keyID]
	if s == nil {
		if len(r.m) >= maxRateShares {
			r.sweepLocked(time.Now())
		}
		s = &rateShare{}
		r.m[keyID] = s
	}
	return s
}

// maxRateShares bounds the shares kept; older ones are dropped first.
const maxRateShares = 100_000

// sweepLocked drops shares not used in the last two minutes (r.mu held).
func (r *Rates) sweepLocked(now time.Time) {
	for k, s := range r.m {
		if s.mu.TryLock() {
			old := now.Sub(s.lastUsed) > 2*time.Minute
			s.mu.Unlock()
			if old {
				delete(r.m, k)
			}
		}
	}
}
