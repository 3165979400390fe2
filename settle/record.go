package settle

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/cnaitoken/caddy-aitoken/billing"
	"github.com/cnaitoken/caddy-aitoken/billing/money"
	"github.com/cnaitoken/caddy-aitoken/jsonenc"
)

// recordVersion is the version AppendJSON writes.
const recordVersion = 1

// Record is one settlement as the journal and the spool keep it, from the
// end of its response until Redis has applied it: who pays, the hold to
// release, what to debit, the tokens to count in the key's tpm window, and
// the usage record to add to the usage stream.
//
// It is written as one JSON line of version 1:
//
//	{"v":1,"request_id":"req_…","user":"usr_1","key_id":"key_1","hold":"0.000500000",
//	 "tpm":5000,"no_hold":false,"cost":"0.000001234","tokens":17,"record":{…},"mode":"replay"}
//
// with "lease" and "seq" added for a request admitted from a balance lease,
// and read from that or from the unversioned line written before versions
// (a "grant" object with billing.Grant's Go field names), so journal and
// spool files left by an older build are still replayed.
type Record struct {
	// RequestID names the request and its hold; a replay is idempotent by it.
	RequestID string `json:"request_id"`
	// User is the account billed.
	User string `json:"user"`
	// KeyID is the API key used.
	KeyID string `json:"key_id"`
	// Hold is what admission reserved, released by the settlement.
	Hold money.Nanos `json:"hold"`
	// TPM is the key's tokens-per-minute limit; 0 counts no tokens.
	TPM int64 `json:"tpm"`
	// NoHold is set on a request admitted while Redis was unreachable:
	// nothing was reserved for it.
	NoHold bool `json:"no_hold"`
	// Cost is what the account is debited.
	Cost money.Nanos `json:"cost"`
	// Tokens are added to the key's tpm window: what the request used
	// beyond what admission counted.
	Tokens int64 `json:"tokens"`
	// Usage is the usage record (usagelog.Record's JSON) for the stream.
	Usage json.RawMessage `json:"record"`
	// Mode is how a replay of the record applies it (see attempt).
	Mode billing.SettleMode `json:"mode"`
	// Lease names the balance lease the request was admitted from ("" for
	// a hold in Redis); Seq numbers the settlement in it. A settlement
	// under a lease applies once by its number, whatever the attempt.
	Lease string `json:"lease,omitempty"`
	Seq   int64  `json:"seq,omitempty"`
}

// recordOf is a Record of the grant g, with nothing yet to debit.
func recordOf(g billing.Grant) Record {
	return Record{RequestID: g.RequestID, User: g.User, KeyID: g.KeyID, Hold: g.Hold, TPM: g.Key.TPM, NoHold: g.NoHold,
		Lease: g.Lease}
}

// grant is the part of a billing.Grant a settlement uses.
func (r *Record) grant() billing.Grant {
	return billing.Grant{KeyID: r.KeyID, User: r.User, RequestID: r.RequestID, Hold: r.Hold, NoHold: r.NoHold,
		Key: billing.KeyRecord{ID: r.KeyID, User: r.User, TPM: r.TPM}}
}

// leaseSettlement is r as a settlement under its lease.
func (r *Record) leaseSettlement() billing.LeaseSettlement {
	return billing.LeaseSettlement{Seq: r.Seq, Cost: r.Cost, Record: r.Usage}
}

// attempt tells a settlement's first attempt from its replays.
type attempt bool

const (
	// firstAttempt is made once, by a worker or at the end of the
	// response when the journal cannot take the record.
	firstAttempt attempt = true
	// replayAttempt is every later one: from the spool, which also takes
	// the journal's leftovers after a restart.
	replayAttempt attempt = false
)

// mode is how attempt a applies r, and the one place that decides it.
//
// The first attempt debits even when Redis lost the hold (a restart
// without persistence): SettleLive. It runs at most once, since the Redis
// client retries no command. A replay may follow an attempt that applied
// but whose reply was lost, so it must be idempotent: SettleReplay applies
// only while the hold (or the trace of its expiry) is still there. A
// request admitted without a hold has none to find: every attempt of it,
// the first included, is SettleReplayNoHold, applied once per request ID.
func (r *Record) mode(a attempt) billing.SettleMode {
	switch {
	case r.NoHold:
		return billing.SettleReplayNoHold
	case a == firstAttempt:
		return billing.SettleLive
	default:
		return billing.SettleReplay
	}
}

// replayMode is the mode a replay of r uses: the one written with it.
func (r *Record) replayMode() billing.SettleMode {
	if r.Mode == "" {
		return r.mode(replayAttempt)
	}
	return r.Mode
}

// AppendJSON appends r as one line of JSON, version 1, without reflection:
// one is written per request. Usage must be valid JSON without newlines.
func (r *Record) AppendJSON(b []byte) []byte {
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, recordVersion, 10)
	b = append(b, `,"request_id":`...)
	b = jsonenc.AppendString(b, r.RequestID)
	b = append(b, `,"user":`...)
	b = jsonenc.AppendString(b, r.User)
	b = append(b, `,"key_id":`...)
	b = jsonenc.AppendString(b, r.KeyID)
	b = append(b, `,"hold":"`...)
	b = r.Hold.AppendDecimal(b)
	b = append(b, `","tpm":`...)
	b = strconv.AppendInt(b, r.TPM, 10)
	b = append(b, `,"no_hold":`...)
	b = strconv.AppendBool(b, r.NoHold)
	b = append(b, `,"cost":"`...)
	b = r.Cost.AppendDecimal(b)
	b = append(b, `","tokens":`...)
	b = strconv.AppendInt(b, r.Tokens, 10)
	b = append(b, `,"record":`...)
	if len(r.Usage) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, r.Usage...)
	}
	b = append(b, `,"mode":`...)
	b = jsonenc.AppendString(b, string(r.Mode))
	if r.Lease != "" {
		b = append(b, `,"lease":`...)
		b = jsonenc.AppendString(b, r.Lease)
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, r.Seq, 10)
	}
	return append(b, '}')
}

// MarshalJSON writes r as AppendJSON does.
func (r Record) MarshalJSON() ([]byte, error) {
	return r.AppendJSON(nil), nil
}

// plainRecord is Record without its methods, for decoding.
type plainRecord Record

// legacyGrant is the "grant" of a record written before records had a
// version: the fields of billing.Grant a settlement uses.
type legacyGrant struct {
	KeyID     string
	User      string
	RequestID string
	Hold      money.Nanos
	Key       struct{ TPM int64 }
	NoHold    bool
}

// UnmarshalJSON reads a record of version 1, or an unversioned one.
func (r *Record) UnmarshalJSON(b []byte) error {
	var w struct {
		V     int          `json:"v"`
		Grant *legacyGrant `json:"grant"`
		plainRecord
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	switch {
	case w.V == recordVersion:
		*r = Record(w.plainRecord)
	case w.V != 0:
		return fmt.Errorf("settle: settlement record of unknown version %d", w.V)
	case w.Grant == nil:
		return errors.New("settle: not a settlement record")
	default:
		// Its cost, tokens, record and mode have the names they keep.
		g := w.Grant
		*r = Record{RequestID: g.RequestID, User: g.User, KeyID: g.KeyID, Hold: g.Hold, TPM: g.Key.TPM,
			NoHold: g.NoHold, Cost: w.Cost, Tokens: w.Tokens, Usage: w.Usage, Mode: w.Mode}
	}
	return nil
}
