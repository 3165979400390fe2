package accounting

import (
	"context"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// Report is what Reconcile found, and did when it applied.
type Report struct {
	Applied bool `json:"applied"`
	// Flushed is how many usage records were moved into the ledger first.
	Flushed      int           `json:"flushed"`
	UsersChecked int           `json:"users_checked"`
	KeysChecked  int           `json:"keys_checked"`
	Accounts     []AccountDiff `json:"accounts"`
	Keys         []KeyDiff     `json:"keys"`
	InSync       bool          `json:"in_sync"`
	ReconciledAt time.Time     `json:"reconciled_at"`
}

// AccountDiff is an account whose Redis balance is not the ledger's.
type AccountDiff struct {
	User string `json:"user"`
	// Ledger is credits minus usage in SQLite, the system of record.
	Ledger money.Nanos `json:"ledger"`
	// Redis is the live balance (before apply).
	Redis money.Nanos `json:"redis"`
	// Difference is Redis − Ledger.
	Difference money.Nanos `json:"difference"`
	// Missing is true when Redis had no account at all.
	Missing bool `json:"missing,omitempty"`
	// LedgerOutOfRange is the exact ledger balance when it lies outside
	// ±money.MaxNanos (rows stored before amounts were bounded): Ledger
	// is then clamped to the range, which is what apply writes to Redis,
	// and the account stays reported until a debit or credit brings the
	// ledger back in range.
	LedgerOutOfRange string `json:"ledger_out_of_range,omitempty"`
}

// KeyDiff is a key whose Redis record disagrees with the ledger.
type KeyDiff struct {
	ID      string `json:"id,omitempty"`
	User    string `json:"user,omitempty"`
	Problem string `json:"problem"`
}

// Reconcile compares the ledger with Redis after flushing pending usage and
// repairing pending credits, and with apply rebuilds Redis from the ledger:
// balances, and keys (active ones restored, revoked ones revoked, unknown
// ones revoked). Live holds are kept. Settlements racing with an apply may
// leave a small difference that the next run reports.
func (b *Books) Reconcile(ctx context.Context, apply bool) (Report, error) {
	rep := Report{Applied: apply, Accounts: []AccountDiff{}, Keys: []KeyDiff{}, ReconciledAt: time.Now().UTC()}
	n, err := b.flush(ctx)
	if err != nil {
		return rep, err
	}
	rep.Flushed = n
	// Credits committed but not yet in Redis go first, so the comparison
	// (and an apply) never counts them twice.
	if _, err := b.RepairCredits(ctx); err != nil {
		return rep, err
	}
	if apply {
		// The rebuilt balances include every ledger entry, also one Redis
		// refused above: none may be applied again by a later repair.
		if _, err := b.store.MarkAllApplied(ctx); err != nil {
			return rep, err
		}
	}
	if err := b.reconcileAccounts(ctx, &rep, apply); err != nil {
		return rep, err
	}
	if err := b.reconcileKeys(ctx, &rep, apply); err != nil {
		return rep, err
	}
	if apply {
		if err := b.accounts.MarkSeeded(ctx); err != nil {
			return rep, err
		}
	}
	rep.InSync = len(rep.Accounts) == 0 && len(rep.Keys) == 0
	return rep, nil
}

// reconcileAccounts compares every ledger balance with Redis's, and with
// apply writes the ledger's.
func (b *Books) reconcileAccounts(ctx context.Context, rep *Report, apply bool) error {
	balances, err := b.store.AccountBalances(ctx)
	if err != nil {
		return err
	}
	users := make([]string, 0, len(balances))
	for _, bal := range balances {
		users = append(users, bal.User)
	}
	live, err := b.accounts.Live(ctx, users)
	if err != nil {
		return err
	}
	rep.UsersChecked = len(users)
	for _, bal := range balances {
		u, want := bal.User, bal.Balance.Nanos
		l := live[u]
		if l.Balance == want && !l.Missing && !bal.Balance.OutOfRange() {
			continue
		}
		rep.Accounts = append(rep.Accounts, AccountDiff{User: u, Ledger: want, Redis: l.Balance,
			Difference: l.Balance - want, Missing: l.Missing, LedgerOutOfRange: bal.Balance.Exact})
		if apply {
			if err := b.accounts.SetBalance(ctx, u, want); err != nil {
				return err
			}
		}
	}
	return nil
}

// reconcileKeys compares every ledger key with its Redis record, and every
// Redis record with the ledger, and with apply makes Redis agree.
func (b *Books) reconcileKeys(ctx context.Context, rep *Report, apply bool) error {
	keys, err := b.store.AllKeys(ctx)
	if err != nil {
		return err
	}
	hashes := make([]string, len(keys))
	for i, k := range keys {
		hashes[i] = k.Hash
	}
	states, err := b.accounts.KeyStates(ctx, hashes)
	if err != nil {
		return err
	}
	rep.KeysChecked = len(keys)
	known := make(map[string]bool, len(keys))
	now := time.Now()
	for _, k := range keys {
		known[k.Hash] = true
		wantActive := k.Status == usagelog.KeyActive && (k.ExpiresAt == nil || k.ExpiresAt.After(now))
		active, present := states[k.Hash]
		problem := ""
		switch {
		case wantActive && !present:
			problem = "active in the ledger, missing in redis"
		case wantActive && !active:
			problem = "active in the ledger, revoked in redis"
		case !wantActive && present && active && k.Status != usagelog.KeyActive:
			problem = "revoked in the ledger, active in redis"
		}
		if problem == "" {
			continue
		}
		rep.Keys = append(rep.Keys, KeyDiff{ID: k.ID, User: k.UserID, Problem: problem})
		if apply {
			if err := b.accounts.PutKey(ctx, k.Hash, keyRecord(k, wantActive)); err != nil {
				return err
			}
		}
	}
	inRedis, err := b.accounts.KeyHashesInRedis(ctx)
	if err != nil {
		return err
	}
	for _, h := range inRedis {
		if known[h] {
			continue
		}
		rep.Keys = append(rep.Keys, KeyDiff{Problem: "in redis, unknown to the ledger (hash " + h[:12] + "…)"})
		if apply {
			if err := b.accounts.RevokeKey(ctx, h); err != nil {
				return err
			}
		}
	}
	return nil
}
