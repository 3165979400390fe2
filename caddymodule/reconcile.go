package caddymodule

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// reconcileReport is what reconcile found, and did when applied.
type reconcileReport struct {
	Applied bool `json:"applied"`
	// Flushed is how many usage records were moved into the ledger first.
	Flushed      int           `json:"flushed"`
	UsersChecked int           `json:"users_checked"`
	KeysChecked  int           `json:"keys_checked"`
	Accounts     []accountDiff `json:"accounts"`
	Keys         []keyDiff     `json:"keys"`
	InSync       bool          `json:"in_sync"`
	ReconciledAt time.Time     `json:"reconciled_at"`
}

// accountDiff is an account whose Redis balance is not the ledger's.
type accountDiff struct {
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

// keyDiff is a key whose Redis record disagrees with the ledger.
type keyDiff struct {
	ID      string `json:"id,omitempty"`
	User    string `json:"user,omitempty"`
	Problem string `json:"problem"`
}

// reconcile compares the ledger with Redis after flushing pending usage,
// and with apply rebuilds Redis from the ledger: balances, and keys (active
// ones restored, revoked ones revoked, unknown ones revoked). Live holds
// are kept. Settlements racing with an apply may leave a small difference
// that the next run reports.
func reconcile(ctx context.Context, app *App, apply bool) (reconcileReport, error) {
	rep := reconcileReport{Applied: apply, Accounts: []accountDiff{}, Keys: []keyDiff{}, ReconciledAt: time.Now().UTC()}
	store, accounts := app.ledger.store, app.accounts
	n, err := app.ledger.flusher.FlushNow(ctx)
	if err != nil {
		return rep, err
	}
	rep.Flushed = n
	// Credits committed but not yet in Redis go first, so the comparison
	// (and an apply) never counts them twice.
	if _, err := repairCredits(ctx, store, accounts); err != nil {
		return rep, err
	}
	if apply {
		// The rebuilt balances include every ledger entry, also one Redis
		// refused above: none may be applied again by a later repair.
		if _, err := store.MarkAllApplied(ctx); err != nil {
			return rep, err
		}
	}

	balances, err := store.AccountBalances(ctx)
	if err != nil {
		return rep, err
	}
	users := make([]string, 0, len(balances))
	for _, b := range balances {
		users = append(users, b.User)
	}
	live, err := accounts.Live(ctx, users)
	if err != nil {
		return rep, err
	}
	rep.UsersChecked = len(users)
	for _, b := range balances {
		u, want := b.User, b.Balance.Nanos
		l := live[u]
		if l.Balance == want && !l.Missing && !b.Balance.OutOfRange() {
			continue
		}
		rep.Accounts = append(rep.Accounts, accountDiff{User: u, Ledger: want, Redis: l.Balance,
			Difference: l.Balance - want, Missing: l.Missing, LedgerOutOfRange: b.Balance.Exact})
		if apply {
			if err := accounts.SetBalance(ctx, u, want); err != nil {
				return rep, err
			}
		}
	}

	keys, err := store.AllKeys(ctx)
	if err != nil {
		return rep, err
	}
	hashes := make([]string, len(keys))
	for i, k := range keys {
		hashes[i] = k.Hash
	}
	states, err := accounts.KeyStates(ctx, hashes)
	if err != nil {
		return rep, err
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
		rep.Keys = append(rep.Keys, keyDiff{ID: k.ID, User: k.UserID, Problem: problem})
		if apply {
			rec := billing.KeyRecord{ID: k.ID, User: k.UserID, Active: wantActive, Models: k.Models, RPM: k.RPM, TPM: k.TPM, AllowedIPs: k.AllowedIPs}
			if k.ExpiresAt != nil {
				rec.ExpiresAt = *k.ExpiresAt
			}
			if err := accounts.PutKey(ctx, k.Hash, rec); err != nil {
				return rep, err
			}
		}
	}
	inRedis, err := accounts.KeyHashesInRedis(ctx)
	if err != nil {
		return rep, err
	}
	for _, h := range inRedis {
		if known[h] {
			continue
		}
		rep.Keys = append(rep.Keys, keyDiff{Problem: "in redis, unknown to the ledger (hash " + h[:12] + "…)"})
		if apply {
			if err := accounts.RevokeKey(ctx, h); err != nil {
				return rep, err
			}
		}
	}
	if apply {
		if err := accounts.MarkSeeded(ctx); err != nil {
			return rep, err
		}
	}
	rep.InSync = len(rep.Accounts) == 0 && len(rep.Keys) == 0
	return rep, nil
}

func postReconcile(app *App, w http.ResponseWriter, r *http.Request) error {
	apply := false
	if s := r.URL.Query().Get("apply"); s != "" {
		var err error
		if apply, err = strconv.ParseBool(s); err != nil {
			return badField("apply", "want true or false")
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Minute)
	defer cancel()
	rep, err := reconcile(ctx, app, apply)
	if err != nil {
		return &adminError{http.StatusServiceUnavailable, "", "reconcile: " + err.Error()}
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
