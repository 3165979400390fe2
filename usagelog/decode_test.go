package usagelog

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"
)

func decodeSeeds() []string {
	b, _ := json.Marshal(rec("0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b", "u_0123456789abcdef", time.Now().UTC()))
	return []string{
		string(b),
		`{"request_id":"a","time":"2026-01-02T03:04:05.123+01:00","user":"u","cost":"1.5","status":200}`,
		`{"request_id":"a\u0062","user":"\u00e9","time":"2026-01-02T03:04:05Z"}`,
		`{"Request_ID":"a","USER":"u","time":"2026-01-02T03:04:05Z"}`,
		`{"request_id":"a","status":1.0,"cost":1.25,"input_tokens":1e3}`,
		`{"request_id":null,"time":null,"cost":null,"stream":null}`,
		`{"status":"200","stream":1,"cost":"x","time":"yesterday"}`,
		`{"request_id":"a","request_id":"b","status":1,"status":2}`,
		`{"input_tokens":9223372036854775808,"status":-0}`,
		`{"extra":{"nested":[1,2]},"request_id":"a"}`,
		`{"request_id":"a","estimated":false,"usage_clamped":true,"cost":"9007199.254740991"}`,
		`{"usage_clamped":null,"cost":"9007199.254740992"}`, `{"usage_clamped":1}`, `{"usage_clamped":"true"}`,
		`[1,2]`, `"x"`, `null`, `{`, ``, `{"a":"b"}x`, " {\"user\":\"\xff\"} ",
		`{"request_id":"r","user":"é","model":"模型","time":"2026-01-02T03:04:05Z"}`, "{\"request_id\":\"a\tb\"}",
		`{"status":01}`, `{"input_tokens":-}`, `{"cost":1.}`, `{"cost":1e}`, `{"cost":-0.5e+2}`, `{"stream":tru}`,
		` { "user" : "u" , "stream" : true } `, `{}`, `{"user":"u",}`, `{"user" "u"}`,
	}
}

// FuzzDecodeRecord checks that the fast decoder agrees with encoding/json
// on every input: same error or no error, same record.
func FuzzDecodeRecord(f *testing.F) {
	for _, s := range decodeSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		// Into a record every field of which is set: the flusher decodes
		// into the records of the batch before, so nothing of those may
		// remain.
		got := usedRecord()
		gotErr := decodeRecord(raw, &got)
		var want Record
		wantErr := json.Unmarshal([]byte(raw), &want)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("%q: fast %v, encoding/json %v", raw, gotErr, wantErr)
		}
		if gotErr != nil {
			return
		}
		if !got.Time.Equal(want.Time) || got.Time.String() != want.Time.String() {
			t.Fatalf("%q: time %v, want %v", raw, got.Time, want.Time)
		}
		got.Time, want.Time = time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n got %+v\nwant %+v", raw, got, want)
		}
	})
}

// usedRecord is a record with every field set.
func usedRecord() Record {
	r := rec("req_used", "u_used", time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC))
	r.CacheWriteTokens, r.Clamped, r.Estimated = 9, true, true
	return r
}

func TestFastDecodeTakesProducerShape(t *testing.T) {
	raw := decodeSeeds()[0]
	if r := usedRecord(); !fastDecode(raw, &r) {
		t.Errorf("a producer's record fell back to encoding/json: %s", raw)
	}
}

// TestDecodeInOrderTakesAppendJSON checks that what the gateway writes is
// read in key order (with and without the keys AppendJSON may leave out),
// and that FuzzDecodeRecord's first seed takes that path too.
func TestDecodeInOrderTakesAppendJSON(t *testing.T) {
	var r Record
	if !decodeInOrder(decodeSeeds()[0], &r) {
		t.Errorf("the fuzz seed of a producer's record is not read in order: %s", decodeSeeds()[0])
	}
	full := rec("req_0193a1b27c3d7e4f8a9b0c1d2e3f", "u_0123456789abcdef", time.Date(2026, 12, 4, 1, 2, 3, 456789000, time.UTC))
	full.CacheWriteTokens, full.Clamped, full.Estimated = 7, true, true
	short := full
	short.CacheWriteTokens, short.Clamped = 0, false
	for _, r := range []Record{full, short} {
		raw, err := r.AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		got := usedRecord()
		if !decodeInOrder(string(raw), &got) {
			t.Fatalf("AppendJSON's record is not read in order: %s", raw)
		}
		if !got.Time.Equal(r.Time) {
			t.Fatalf("time %v, want %v", got.Time, r.Time)
		}
		got.Time = r.Time
		if got != r {
			t.Fatalf("read in order:\n got %+v\nwant %+v", got, r)
		}
	}
	// Out of order, spaced, or with a key left over: encoding/json's
	// reading, by the other paths (FuzzDecodeRecord holds them to it).
	for _, raw := range []string{
		`{"time":"2026-01-02T03:04:05Z","request_id":"a"}`,
		`{"request_id": "a"}`,
		`{"request_id":"a","client_ip":"x","user":"u"}`,
		`{"request_id":"a","request_id":"b"}`,
		`{"request_id":"a"} `,
	} {
		if decodeInOrder(raw, &r) {
			t.Errorf("%s read in order", raw)
		}
	}
}

func BenchmarkDecodeRecord(b *testing.B) {
	raw := decodeSeeds()[0]
	var r Record
	b.ReportAllocs()
	for b.Loop() {
		if err := decodeRecord(raw, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// smallInt agrees with strconv.ParseInt wherever it answers.
func FuzzSmallInt(f *testing.F) {
	for _, s := range []string{"0", "-0", "7", "-12", "123456789012345678", "1234567890123456789", "", "-", "1e3", "01", "+5", " 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := smallInt(s)
		if !ok {
			return
		}
		want, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n != want {
			t.Fatalf("smallInt(%q) = %d, ParseInt: %d, %v", s, n, want, err)
		}
	})
}
