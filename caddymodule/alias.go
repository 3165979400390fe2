package caddymodule

import (
	"fmt"
	"sync"

	"github.com/cnaitoken/caddy-aitoken/billing/money"
)

// aliasOf is the provider model that the customer-facing name model
// stands for on this route, if model is an alias.
func (h *Handler) aliasOf(model string) (provider string, ok bool) {
	if h.Aliases == nil {
		return "", false
	}
	provider, ok = h.Aliases[model]
	return provider, ok
}

// priceOf finds the price of the model a client named: for an alias, a
// price line of the alias name itself (exact or prefix) wins, else the
// provider model's price applies.
func (h *Handler) priceOf(model string) (money.Price, bool) {
	if p, ok := h.app.prices.Lookup(model); ok {
		return p, true
	}
	if provider, ok := h.aliasOf(model); ok {
		return h.app.prices.Lookup(provider)
	}
	return money.Price{}, false
}

// validateAliases checks that every alias leads to a priced provider model
// under another name, so an alias never reaches an unpriced model.
func (h *Handler) validateAliases() error {
	for name, provider := range h.Aliases {
		if name == "" || provider == "" {
			return fmt.Errorf("alias %q %q: want a customer name and a provider model", name, provider)
		}
		if name == provider {
			return fmt.Errorf("alias %q: names itself", name)
		}
		if _, ok := h.app.prices.Lookup(provider); !ok {
			return fmt.Errorf("alias %q: provider model %q has no price in the aitoken global option", name, provider)
		}
	}
	return nil
}

// aliasNames are the alias names the handlers of one config declared, so
// that a key may be limited to an alias.
type aliasNames struct {
	mu    sync.RWMutex
	names map[string]struct{}
}

// add records the alias names of a handler.
func (a *aliasNames) add(aliases map[string]string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.names == nil {
		a.names = make(map[string]struct{}, len(aliases))
	}
	for name := range aliases {
		a.names[name] = struct{}{}
	}
}

// has reports whether name is an alias on some route.
func (a *aliasNames) has(name string) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	_, ok := a.names[name]
	return ok
}
