package caddymodule

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/cnaitoken/caddy-aitoken/billing"
)

// TestSpooledAppendJSONDecodesAsMarshal: the hand-written encoding of a
// settlement reads back (as the spool replay and journal recovery read
// it) exactly as encoding/json's does.
func TestSpooledAppendJSONDecodesAsMarshal(t *testing.T) {
	full := billing.Grant{KeyID: "key_1", User: "usr <&> \"1\"", RequestID: "req_0194f1a2b3c4d5e6f7a8b9c0", Hold: 123_456_789,
		Key: billing.KeyRecord{ID: "key_1", User: "usr <&> \"1\"", Active: true, Models: []string{"m"}, TPM: 5000, RPM: 7,
			ExpiresAt: time.Unix(1_800_000_000, 0), AllowedIPs: []string{"b1"}},
		Limits: billing.RateState{RequestLimit: 7, RequestsLeft: 3}}
	for _, g := range []billing.Grant{full, {KeyID: "k", User: "u", RequestID: "r", NoHold: true}} {
		s := spooled{Grant: settlementGrant(g), Cost: -42, Tokens: 99, Record: json.RawMessage(`{"request_id":"r","cost":"0.1"}`),
			Mode: billing.SettleReplay}
		var fromMarshal, fromAppend spooled
		m, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(m, &fromMarshal); err != nil {
			t.Fatal(err)
		}
		a := s.appendJSON(nil)
		if err := json.Unmarshal(a, &fromAppend); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if !reflect.DeepEqual(fromMarshal, fromAppend) {
			t.Fatalf("decoded differently:\nmarshal %+v\nappend  %+v\n%s", fromMarshal, fromAppend, a)
		}
		if fromAppend.Grant.Key.TPM != g.Key.TPM || fromAppend.Grant.Mode() != g.Mode() || fromAppend.Grant.RequestID != g.RequestID {
			t.Fatalf("lost a field a settlement needs: %+v", fromAppend.Grant)
		}
	}
}
