package caddymodule

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestHandlerCaddyfileOptions(t *testing.T) {
	for _, c := range []struct {
		in      string
		wantErr string
		check   func(h *Handler) bool
	}{
		{in: "aitoken {\n on_client_gone cancel\n}", check: func(h *Handler) bool { return h.OnClientGone == "cancel" }},
		{in: "aitoken {\n on_client_gone finish 5m\n}", check: func(h *Handler) bool {
			return h.OnClientGone == "finish" && time.Duration(h.ClientGoneTimeout) == 5*time.Minute
		}},
		{in: "aitoken {\n on_client_gone cancel 5m\n}", wantErr: "takes no timeout"},
		{in: "aitoken {\n on_client_gone finish soon\n}", wantErr: "want a duration"},
		{in: "aitoken {\n on_client_gone drop\n}", wantErr: "want finish or cancel"},
		{in: "aitoken {\n on_client_gone\n}", wantErr: "wrong argument count"},
		{in: "aitoken {\n passthrough /v1/files /v1/files/*\n passthrough /v1/batches\n}", check: func(h *Handler) bool {
			return slices.Equal(h.Passthrough, []string{"/v1/files", "/v1/files/*", "/v1/batches"})
		}},
		{in: "aitoken {\n passthrough\n}", wantErr: "wrong argument count"},
	} {
		h := new(Handler)
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.in))
		switch {
		case c.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q: error %v, want %q", c.in, err, c.wantErr)
			}
		case err != nil:
			t.Errorf("%q: %v", c.in, err)
		case !c.check(h):
			t.Errorf("%q: parsed %+v", c.in, h)
		}
	}
}

func TestHandlerValidateRefusesBadOptions(t *testing.T) {
	for _, h := range []*Handler{
		{OnRedisError: "deny", OnClientGone: "drop"},
		{OnRedisError: "deny", OnClientGone: "finish", Passthrough: []string{"v1/files"}},
		// An alias must lead to a priced model, under another name.
		{OnRedisError: "deny", OnClientGone: "finish", Aliases: map[string]string{"cheap": "unpriced"}},
		{OnRedisError: "deny", OnClientGone: "finish", Aliases: map[string]string{"m": "m"}},
	} {
		h.app = &App{}
		if err := h.Validate(); err == nil {
			t.Errorf("%+v validated", h)
		}
	}
}
