package dashboard

import (
	"encoding/csv"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cnaitoken/caddy-aitoken/usagelog"
)

// usagePage is the size of a usage page; downloadLimit bounds a download.
const (
	usagePage     = 50
	downloadLimit = 100_000
)

type usageData struct {
	From, To, Model, Key string
	Records              []usagelog.Record
	Next                 template.URL // the query of the next page; "" on the last
	Query                template.URL // the filters, for the download links
}

// usageQuery reads the page's filters; a key that is not the customer's
// is refused.
func (d *Dashboard) usageQuery(rq *request) (usagelog.UsageQuery, usageData, error) {
	q := rq.URL.Query()
	v := usageData{From: q.Get("from"), To: q.Get("to"), Model: q.Get("model"), Key: q.Get("key")}
	uq := usagelog.UsageQuery{User: rq.s.User, Model: v.Model, Key: v.Key, Before: q.Get("before")}
	for _, b := range []struct {
		s   string
		dst *time.Time
		add int
	}{{v.From, &uq.From, 0}, {v.To, &uq.To, 1}} {
		if b.s == "" {
			continue
		}
		t, err := time.Parse("2006-01-02", b.s)
		if err != nil {
			return uq, v, errBadFilter
		}
		*b.dst = t.AddDate(0, 0, b.add) // "to" includes its day
	}
	if v.Key != "" {
		k, err := rq.b.Store.GetKey(rq.Context(), v.Key)
		if errors.Is(err, usagelog.ErrNotFound) || err == nil && k.UserID != rq.s.User {
			return uq, v, usagelog.ErrNotFound
		}
		if err != nil {
			return uq, v, err
		}
	}
	filters := url.Values{}
	for k, s := range map[string]string{"from": v.From, "to": v.To, "model": v.Model, "key": v.Key} {
		if s != "" {
			filters.Set(k, s)
		}
	}
	v.Query = template.URL(filters.Encode()) // encoded: safe in a query
	return uq, v, nil
}

var errBadFilter = errors.New("bad filter")

func (d *Dashboard) usage(w http.ResponseWriter, rq *request) {
	uq, v, err := d.usageQuery(rq)
	switch {
	case errors.Is(err, usagelog.ErrNotFound):
		d.notFound(w, rq)
		return
	case errors.Is(err, errBadFilter):
		d.render(w, rq, http.StatusBadRequest, "usage", view{Data: v, Error: rq.t("usage.bad_filter")})
		return
	case err != nil:
		d.fail(w, rq, "reading usage filters", err)
		return
	}
	switch rq.URL.Query().Get("format") {
	case "csv", "json":
		d.download(w, rq, uq)
		return
	}
	uq.Limit = usagePage + 1
	recs, err := rq.b.Store.ListUsage(rq.Context(), uq)
	if errors.Is(err, usagelog.ErrNotFound) {
		d.notFound(w, rq) // a cursor that is not the customer's
		return
	}
	if err != nil {
		d.fail(w, rq, "listing usage", err)
		return
	}
	if len(recs) > usagePage {
		recs = recs[:usagePage]
		next, _ := url.ParseQuery(string(v.Query))
		next.Set("before", recs[len(recs)-1].RequestID)
		v.Next = template.URL(next.Encode())
	}
	v.Records = recs
	d.render(w, rq, http.StatusOK, "usage", view{Data: v})
}

// download streams every matching row (up to downloadLimit) as CSV or a
// JSON array, a page at a time.
func (d *Dashboard) download(w http.ResponseWriter, rq *request, uq usagelog.UsageQuery) {
	format := rq.URL.Query().Get("format")
	uq.Limit = usagelog.MaxUsageLimit
	name := "usage-" + time.Now().UTC().Format("20060102")
	var cw *csv.Writer
	if format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		cw = csv.NewWriter(w)
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.`+format+`"`)
	started, n := false, 0
	for n < downloadLimit {
		recs, err := rq.b.Store.ListUsage(rq.Context(), uq)
		if err != nil {
			if !started {
				w.Header().Del("Content-Disposition")
				d.fail(w, rq, "downloading usage", err)
				return
			}
			panic(http.ErrAbortHandler) // never a short file that looks whole
		}
		if !started {
			started = true
			if cw != nil {
				_ = cw.Write([]string{"request_id", "time", "key_id", "model", "endpoint", "status", "outcome",
					"input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "cost", "currency", "client_ip"})
			} else {
				_, _ = w.Write([]byte("["))
			}
		}
		for _, r := range recs {
			if cw != nil {
				i := func(n int64) string { return strconv.FormatInt(n, 10) }
				_ = cw.Write([]string{r.RequestID, r.Time.Format(time.RFC3339Nano), r.KeyID, r.Model, r.Endpoint,
					strconv.Itoa(r.Status), r.Outcome, i(r.InputTokens), i(r.CachedInputTokens), i(r.OutputTokens),
					i(r.ReasoningTokens), r.Cost.String(), r.Currency, r.ClientIP})
			} else {
				if n > 0 {
					_, _ = w.Write([]byte(","))
				}
				b, _ := r.AppendJSON(nil)
				_, _ = w.Write(b)
			}
			n++
		}
		if len(recs) < uq.Limit {
			break
		}
		uq.Before = recs[len(recs)-1].RequestID
	}
	if cw != nil {
		cw.Flush()
	} else {
		_, _ = w.Write([]byte("]"))
	}
}
