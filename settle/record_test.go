package settle

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// TestRecordAppendJSONDecodesAsMarshal: the hand-written encoding of a
// settlement reads back (as the spool replay and journal recovery read
// it) exactly as encoding/json's encoding of its tagged fields does, and
// keeps every field a settlement needs.
func TestRecordAppendJSONDecodesAsMarshal(t *testing.T) {
	full := billing.Grant{KeyID: "key_1", User: "usr <&> \"1\"", RequestID: "req_0194f1a2b3c4d5e6f7a8b9c0", Hold: 123_456_789,
		Key: billing.KeyRecord{ID: "key_1", User: "usr <&> \"1\"", Active: true, Models: []string{"m"}, TPM: 5000, RPM: 7,
			ExpiresAt: time.Unix(1_800_000_000, 0), AllowedIPs: []string{"b1"}},
		Limits: billing.RateState{RequestLimit: 7, RequestsLeft: 3}}
	for _, g := range []billing.Grant{full, {KeyID: "k", User: "u", RequestID: "r", NoHold: true}} {
		rec := recordOf(g)
		rec.Cost, rec.Tokens, rec.Usage = -42, 99, json.RawMessage(`{"request_id":"r","cost":"0.1"}`)
		rec.Mode = billing.SettleReplay
		m, err := json.Marshal(struct {
			V int `json:"v"`
			plainRecord
		}{recordVersion, plainRecord(rec)})
		if err != nil {
			t.Fatal(err)
		}
		a := rec.AppendJSON(nil)
		if string(a) != string(m) {
			t.Errorf("encoded differently:\nmarshal %s\nappend  %s", m, a)
		}
		var fromMarshal, fromAppend Record
		if err := json.Unmarshal(m, &fromMarshal); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(a, &fromAppend); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if !reflect.DeepEqual(fromMarshal, fromAppend) || !reflect.DeepEqual(fromAppend, rec) {
			t.Fatalf("decoded differently:\nmarshal %+v\nappend  %+v\nwant    %+v\n%s", fromMarshal, fromAppend, rec, a)
		}
		got := fromAppend.grant()
		if got.Key.TPM != g.Key.TPM || got.NoHold != g.NoHold || got.RequestID != g.RequestID ||
			got.User != g.User || got.KeyID != g.KeyID || got.Hold != g.Hold {
			t.Fatalf("lost a field a settlement needs: %+v", got)
		}
	}
}

// TestRecordReadsTheUnversionedFormat decodes a line as the gateway wrote
// it before records had a version, from its journal and spool files.
func TestRecordReadsTheUnversionedFormat(t *testing.T) {
	const old = `{"grant":{"KeyID":"key_1","User":"usr_1","RequestID":"req_0194f1a2b3c4d5e6f7a8b9c0","Hold":"0.123456789",` +
		`"Key":{"ID":"key_1","User":"usr_1","TPM":5000},"NoHold":true},"cost":"-0.000000042","tokens":99,` +
		`"record":{"request_id":"req_0194f1a2b3c4d5e6f7a8b9c0","cost":"0.1"},"mode":"replay-nohold"}`
	var rec Record
	if err := json.Unmarshal([]byte(old), &rec); err != nil {
		t.Fatal(err)
	}
	want := Record{RequestID: "req_0194f1a2b3c4d5e6f7a8b9c0", User: "usr_1", KeyID: "key_1", Hold: 123_456_789, TPM: 5000,
		NoHold: true, Cost: -42, Tokens: 99, Usage: json.RawMessage(`{"request_id":"req_0194f1a2b3c4d5e6f7a8b9c0","cost":"0.1"}`),
		Mode: billing.SettleReplayNoHold}
	if !reflect.DeepEqual(rec, want) {
		t.Fatalf("decoded %+v\nwant    %+v", rec, want)
	}
	// Written again, it is a record of the current version.
	var again Record
	if err := json.Unmarshal(rec.AppendJSON(nil), &again); err != nil || !reflect.DeepEqual(again, want) {
		t.Fatalf("re-encoded: %+v, %v", again, err)
	}
}

func TestRecordRefusesWhatItCannotRead(t *testing.T) {
	for _, line := range []string{
		`{"v":2,"request_id":"r","user":"u","cost":"1"}`, // a newer build's: not guessed at
		`{"request_id":"r","user":"u","cost":"1"}`,       // neither version
		`{"v":1,"cost":"one"}`,
		`[]`,
	} {
		var rec Record
		if err := json.Unmarshal([]byte(line), &rec); err == nil {
			t.Errorf("%s: decoded as %+v", line, rec)
		}
	}
}

// TestSettleModes pins the rule of mode: a first attempt debits whatever
// Redis remembers, every replay is idempotent, and a request admitted
// without a hold is idempotent on every attempt.
func TestSettleModes(t *testing.T) {
	for _, c := range []struct {
		noHold bool
		a      attempt
		want   billing.SettleMode
	}{
		{false, firstAttempt, billing.SettleLive},
		{false, replayAttempt, billing.SettleReplay},
		{true, firstAttempt, billing.SettleReplayNoHold},
		{true, replayAttempt, billing.SettleReplayNoHold},
	} {
		rec := Record{NoHold: c.noHold}
		if got := rec.mode(c.a); got != c.want {
			t.Errorf("no hold %v, first %v: mode %q, want %q", c.noHold, c.a, got, c.want)
		}
	}
	// A replay uses the mode written with the record.
	rec := Record{Mode: billing.SettleReplay}
	if got := rec.replayMode(); got != billing.SettleReplay {
		t.Errorf("replay mode %q", got)
	}
	if got := (&Record{NoHold: true}).replayMode(); got != billing.SettleReplayNoHold {
		t.Errorf("replay mode without a written one %q", got)
	}
}
