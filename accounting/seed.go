package accounting

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// SeedRedis rebuilds the accounts and keys of a Redis that has none (new,
// or restarted without its data) from the ledger, the system of record:
// balances (credits minus usage, with no holds) and active keys. A Redis
// already seeded is left alone.
func (b *Books) SeedRedis(ctx context.Context) error {
	seeded, err := b.accounts.Seeded(ctx)
	if err != nil {
		return fmt.Errorf("redis: %v", err)
	}
	if seeded {
		return nil
	}
	// The seed includes every ledger entry: none may be applied again.
	if _, err := b.store.MarkAllApplied(ctx); err != nil {
		return err
	}
	balances, err := b.store.Balances(ctx)
	if err != nil {
		return err
	}
	active, err := b.store.ActiveKeys(ctx)
	if err != nil {
		return err
	}
	keys := make(map[string]billing.KeyRecord, len(active))
	for _, k := range active {
		keys[k.Hash] = keyRecord(k, true)
	}
	if err := b.accounts.Seed(ctx, balances, keys); err != nil {
		return fmt.Errorf("seeding redis from the ledger: %v", err)
	}
	b.log.Info("seeded redis from the ledger", zap.Int("accounts", len(balances)), zap.Int("keys", len(keys)))
	return nil
}
