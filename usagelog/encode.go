package usagelog

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/cnaitoken/caddy-aitoken/jsonenc"
)

// AppendJSON appends r encoded exactly as encoding/json encodes it, without
// reflection: the gateway encodes one record per request. It fails only
// where json.Marshal fails (a time outside years 0–9999).
func (r *Record) AppendJSON(b []byte) ([]byte, error) {
	if y := r.Time.Year(); y < 0 || y > 9999 {
		c := *r // marshalled from a copy, so that r itself never escapes
		j, err := json.Marshal(&c)
		return append(b, j...), err
	}
	b = append(b, `{"request_id":`...)
	b = jsonenc.AppendString(b, r.RequestID)
	b = append(b, `,"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","user":`...)
	b = jsonenc.AppendString(b, r.User)
	b = append(b, `,"key_id":`...)
	b = jsonenc.AppendString(b, r.KeyID)
	b = append(b, `,"model":`...)
	b = jsonenc.AppendString(b, r.Model)
	b = append(b, `,"endpoint":`...)
	b = jsonenc.AppendString(b, r.Endpoint)
	b = append(b, `,"stream":`...)
	b = strconv.AppendBool(b, r.Stream)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, `,"outcome":`...)
	b = jsonenc.AppendString(b, r.Outcome)
	b = append(b, `,"input_tokens":`...)
	b = strconv.AppendInt(b, r.InputTokens, 10)
	b = append(b, `,"cached_input_tokens":`...)
	b = strconv.AppendInt(b, r.CachedInputTokens, 10)
	if r.CacheWriteTokens != 0 {
		b = append(b, `,"cache_write_tokens":`...)
		b = strconv.AppendInt(b, r.CacheWriteTokens, 10)
	}
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, r.OutputTokens, 10)
	b = append(b, `,"reasoning_tokens":`...)
	b = strconv.AppendInt(b, r.ReasoningTokens, 10)
	b = append(b, `,"cost":"`...)
	b = r.Cost.AppendDecimal(b)
	b = append(b, `","currency":`...)
	b = jsonenc.AppendString(b, r.Currency)
	b = append(b, `,"estimated":`...)
	b = strconv.AppendBool(b, r.Estimated)
	if r.Clamped {
		b = append(b, `,"usage_clamped":true`...)
	}
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendInt(b, r.DurationMS, 10)
	b = append(b, `,"ttft_ms":`...)
	b = strconv.AppendInt(b, r.TTFTMS, 10)
	b = append(b, `,"client_ip":`...)
	b = jsonenc.AppendString(b, r.ClientIP)
	return append(b, '}'), nil
}
