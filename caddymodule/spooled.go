package caddymodule

import (
	"encoding/json"
	"strconv"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/jsonenc"
)

// spooled is a settlement waiting in the journal or the spool.
type spooled struct {
	Grant  billing.Grant      `json:"grant"`
	Cost   money.Nanos        `json:"cost"`
	Tokens int64              `json:"tokens"`
	Record json.RawMessage    `json:"record"`
	Mode   billing.SettleMode `json:"mode"`
}

// appendJSON appends s as JSON that decodes to s (json.Unmarshal), without
// reflection: one is written per request. It writes the grant fields a
// settlement uses (settlementGrant); Record must be valid JSON.
func (s *spooled) appendJSON(b []byte) []byte {
	g := &s.Grant
	b = append(b, `{"grant":{"KeyID":`...)
	b = jsonenc.AppendString(b, g.KeyID)
	b = append(b, `,"User":`...)
	b = jsonenc.AppendString(b, g.User)
	b = append(b, `,"RequestID":`...)
	b = jsonenc.AppendString(b, g.RequestID)
	b = append(b, `,"Hold":"`...)
	b = g.Hold.AppendDecimal(b)
	b = append(b, `","Key":{"ID":`...)
	b = jsonenc.AppendString(b, g.Key.ID)
	b = append(b, `,"User":`...)
	b = jsonenc.AppendString(b, g.Key.User)
	b = append(b, `,"TPM":`...)
	b = strconv.AppendInt(b, g.Key.TPM, 10)
	b = append(b, `},"NoHold":`...)
	b = strconv.AppendBool(b, g.NoHold)
	b = append(b, `},"cost":"`...)
	b = s.Cost.AppendDecimal(b)
	b = append(b, `","tokens":`...)
	b = strconv.AppendInt(b, s.Tokens, 10)
	b = append(b, `,"record":`...)
	b = append(b, s.Record...)
	b = append(b, `,"mode":`...)
	b = jsonenc.AppendString(b, string(s.Mode))
	return append(b, '}')
}
