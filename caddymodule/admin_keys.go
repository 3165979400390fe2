package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/cnaitoken/caddy-aitoken/accounting"
	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// keyView is a key as the admin API shows it; Key is set only at creation.
type keyView struct {
	usagelog.Key
	Secret string `json:"key,omitempty"`
}

// postKey checks a key request and issues the key
// (accounting.Books.IssueKey); the secret is in this answer only.
func postKey(app *App, w http.ResponseWriter, r *http.Request) error {
	var in struct {
		User       string     `json:"user"`
		Name       string     `json:"name"`
		Models     []string   `json:"models"`
		RPM        int64      `json:"rpm"`
		TPM        int64      `json:"tpm"`
		AllowedIPs []string   `json:"allowed_ips"`
		ExpiresAt  *time.Time `json:"expires_at"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	if in.User == "" {
		return badField("user", "required")
	}
	k := usagelog.Key{Name: in.Name, Models: in.Models, RPM: in.RPM, TPM: in.TPM, AllowedIPs: in.AllowedIPs, ExpiresAt: in.ExpiresAt}
	if err := app.checkKeySettings(&k); err != nil {
		return err
	}
	userNotFound := adminErr(http.StatusBadRequest, "user: "+strconv.Quote(in.User)+" not found")
	u, err := app.ledger.store.GetUser(r.Context(), in.User)
	if errors.Is(err, usagelog.ErrNotFound) {
		return userNotFound
	}
	if err != nil {
		return err
	}
	if u.Status != usagelog.UserActive {
		return badField("user", "user %q is %s", in.User, u.Status)
	}
	k.UserID = u.ID
	k, secret, err := app.books().IssueKey(r.Context(), k)
	var re *accounting.RedisError
	switch {
	case errors.Is(err, usagelog.ErrNotFound): // erased since
		return userNotFound
	case errors.As(err, &re):
		return adminErr(http.StatusServiceUnavailable, "redis unavailable; no key was issued: "+re.Err.Error())
	case err != nil:
		return err
	}
	writeJSON(w, http.StatusCreated, keyView{Key: k, Secret: secret})
	return nil
}

// checkKeySettings checks a key's name, models, limits, allowed IPs and
// expiry, as given to create or update it, and normalises its allowed IPs.
func (app *App) checkKeySettings(k *usagelog.Key) error {
	if len(k.Name) > 200 {
		return badField("name", "longer than 200 characters")
	}
	for _, m := range k.Models {
		if _, ok := app.prices.Lookup(m); !ok && !app.aliases.has(m) {
			return badField("models", "%q has no price and is no alias", m)
		}
	}
	if k.RPM < 0 {
		return badField("rpm", "must be 0 (unlimited) or a positive number of requests per minute")
	}
	if k.TPM < 0 {
		return badField("tpm", "must be 0 (unlimited) or a positive number of tokens per minute")
	}
	if k.ExpiresAt != nil && !k.ExpiresAt.After(time.Now()) {
		return badField("expires_at", "must be in the future")
	}
	ips, err := billing.NormalizeAllowedIPs(k.AllowedIPs)
	if err != nil {
		return badField("allowed_ips", "%v", err)
	}
	k.AllowedIPs = ips
	return nil
}

// patchKey changes the fields given of an active key: name, models, rpm,
// tpm, allowed_ips and expires_at (null: never expires). Every node sees
// the change at once (accounting.Books.UpdateKey).
func patchKey(app *App, w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name       *string         `json:"name"`
		Models     *[]string       `json:"models"`
		RPM        *int64          `json:"rpm"`
		TPM        *int64          `json:"tpm"`
		AllowedIPs *[]string       `json:"allowed_ips"`
		ExpiresAt  json.RawMessage `json:"expires_at"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	id := r.PathValue("id")
	k, err := app.ledger.store.GetKey(r.Context(), id)
	if errors.Is(err, usagelog.ErrNotFound) {
		return notFound("key", id)
	}
	if err != nil {
		return err
	}
	if k.Status != usagelog.KeyActive {
		return adminErr(http.StatusConflict, "key "+strconv.Quote(id)+" is revoked: it cannot be changed")
	}
	if in.Name != nil {
		k.Name = *in.Name
	}
	if in.Models != nil {
		k.Models = *in.Models
	}
	if in.RPM != nil {
		k.RPM = *in.RPM
	}
	if in.TPM != nil {
		k.TPM = *in.TPM
	}
	if in.AllowedIPs != nil {
		k.AllowedIPs = *in.AllowedIPs
	}
	if len(in.ExpiresAt) > 0 {
		k.ExpiresAt = nil
		if string(in.ExpiresAt) != "null" {
			var t time.Time
			if err := json.Unmarshal(in.ExpiresAt, &t); err != nil {
				return badField("expires_at", "want an RFC 3339 time or null")
			}
			k.ExpiresAt = &t
		}
	}
	if err := app.checkKeySettings(&k); err != nil {
		return err
	}
	k, err = app.books().UpdateKey(r.Context(), k)
	var re *accounting.RedisError
	switch {
	case errors.Is(err, usagelog.ErrNotFound):
		return notFound("key", id)
	case errors.Is(err, usagelog.ErrKeyRevoked):
		return adminErr(http.StatusConflict, "key "+strconv.Quote(id)+" is revoked: it cannot be changed")
	case errors.As(err, &re):
		return redisBehind("key updated", re)
	case err != nil:
		return err
	}
	// Other nodes drop the key on the change notice; this one at once, so
	// the next request here sees the change whenever the notice arrives.
	app.redis.keys.drop(k.Hash)
	writeJSON(w, http.StatusOK, k)
	return nil
}

func listKeys(app *App, w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "user"); err != nil {
		return err
	}
	user := r.URL.Query().Get("user")
	if user == "" {
		return badField("user", "required query parameter")
	}
	keys, err := app.ledger.store.ListKeys(r.Context(), user)
	if err != nil {
		return err
	}
	if keys == nil {
		keys = []usagelog.Key{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
	return nil
}

// deleteKey revokes a key in the ledger and on every node
// (accounting.Books.RevokeKey).
func deleteKey(app *App, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	k, err := app.books().RevokeKey(r.Context(), id)
	var re *accounting.RedisError
	switch {
	case errors.Is(err, usagelog.ErrNotFound):
		return notFound("key", id)
	case errors.As(err, &re):
		return redisBehind("key revoked", re)
	case err != nil:
		return err
	}
	app.redis.keys.drop(k.Hash) // as in updateKey
	writeJSON(w, http.StatusOK, k)
	return nil
}
