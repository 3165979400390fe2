package caddymodule

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// serveUnmetered answers a request that is not a metered POST: the model
// list, a passthrough path, or else 404 unsupported_endpoint. The key is
// checked first in every case.
func (h *Handler) serveUnmetered(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, keyHash, clean, lower string) error {
	id, one, isModels := modelsPath(lower, clean)
	isModels = isModels && (r.Method == http.MethodGet || r.Method == http.MethodHead)
	pass := false
	if !isModels && h.passthrough != nil {
		var err error
		if pass, err = h.passthrough.MatchWithError(r); err != nil {
			return caddyhttp.Error(http.StatusInternalServerError, err)
		}
	}
	g, err := h.checkKey(r, keyHash)
	if err != nil {
		h.answerAuthError(w, r, err, "")
		return nil
	}
	h.setIdentity(r, g, "")
	switch {
	case isModels:
		h.serveModels(w, g.Key, id, one)
		return nil
	case pass && !strings.ContainsAny(clean, ";\\\x00"):
		// The upstream gets the very path that matched: no encoded
		// separator or path parameter can make it read another.
		r.URL.Path, r.URL.RawPath = clean, ""
		prepareUpstream(r, []string{"identity"})
		return next.ServeHTTP(w, r)
	}
	h.writeRefusal(w, errUnsupportedEndpoint(r.Method, r.URL.Path), "")
	return nil
}

// modelsPath reports whether p, a cleaned and lower-cased path, is the
// model list ("…/v1/models", DeepSeek's bare "/models") or one model
// ("…/v1/models/{id}"). The ID is cut from raw, the cleaned path as sent,
// so its letter case is kept: it is what follows the last "/models/".
func modelsPath(p, raw string) (id string, one, ok bool) {
	p = strings.TrimSuffix(p, "/")
	if p == "/models" || strings.HasSuffix(p, "/v1/models") {
		return "", false, true
	}
	if !strings.Contains(p, "/v1/models/") && !strings.HasPrefix(p, "/models/") {
		return "", false, false
	}
	raw = strings.TrimSuffix(raw, "/")
	const seg = "/models/"
	for i := len(raw) - len(seg); i >= 0; i-- {
		if strings.EqualFold(raw[i:i+len(seg)], seg) {
			return raw[i+len(seg):], true, true
		}
	}
	return "", false, false
}

// visibleModels lists the models a key may use on this route: the route's
// models (default: every exactly priced model and every alias), narrowed
// to the key's own list when it has one. A key's model that only a
// wildcard price covers is listed too.
func (h *Handler) visibleModels(key billing.KeyRecord) []string {
	route := h.Models
	if len(route) == 0 {
		route = h.app.prices.Models()
		if len(h.Aliases) > 0 {
			route = slices.Clone(route)
			for name := range h.Aliases {
				route = append(route, name)
			}
			slices.Sort(route)
			route = slices.Compact(route)
		}
	}
	if len(key.Models) == 0 {
		return slices.Clone(route)
	}
	var out []string
	for _, m := range key.Models {
		if _, priced := h.priceOf(m); !priced {
			continue
		}
		if h.models != nil {
			if _, ok := h.models[m]; !ok {
				continue
			}
		}
		out = append(out, m)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// serveModels answers GET /v1/models (OpenAI's list shape) and
// GET /v1/models/{id} with the models the key may use.
func (h *Handler) serveModels(w http.ResponseWriter, key billing.KeyRecord, id string, one bool) {
	models := h.visibleModels(key)
	var v any
	if one {
		if !slices.Contains(models, id) {
			h.writeRefusal(w, errModelNotFound(id), "")
			return
		}
		v = modelObject(id)
	} else {
		list := modelList{Object: "list", Data: make([]modelEntry, 0, len(models))}
		for _, m := range models {
			list.Data = append(list.Data, modelObject(m))
		}
		v = list
	}
	b, _ := json.Marshal(v)
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// modelList and modelEntry are OpenAI's model list and model object.
type modelList struct {
	Object string       `json:"object"`
	Data   []modelEntry `json:"data"`
}

type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func modelObject(id string) modelEntry {
	return modelEntry{ID: id, Object: "model", OwnedBy: "system"}
}
