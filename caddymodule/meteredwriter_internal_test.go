package caddymodule

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/cnaitoken/caddy-aitoken/meter"
)

// jsonAnswer is a complete, non-streamed chat completion.
const jsonAnswer = `{"id":"c1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`

func newTestMeteredWriter(t *testing.T, rec http.ResponseWriter, ctx context.Context) *meteredWriter {
	t.Helper()
	req, err := meter.ParseRequest(meter.FormatChat, []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`), false)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil).WithContext(ctx)
	return newMeteredWriter(rec, r, req, false)
}

// answer sends jsonAnswer through a new meteredWriter (with its
// Content-Length when withLength) as reverse_proxy does: the header, then
// several writes, the last one ending the body.
func answer(t *testing.T, ctx context.Context, withLength bool) (*httptest.ResponseRecorder, *meteredWriter) {
	t.Helper()
	rec := httptest.NewRecorder()
	mw := newTestMeteredWriter(t, rec, ctx)
	mw.Header().Set("Content-Type", "application/json")
	if withLength {
		mw.Header().Set("Content-Length", strconv.Itoa(len(jsonAnswer)))
	}
	mw.WriteHeader(http.StatusOK)
	for _, part := range []string{jsonAnswer[:10], jsonAnswer[10:50], jsonAnswer[50:]} {
		if n, err := mw.Write([]byte(part)); err != nil || n != len(part) {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(part))
		}
	}
	return rec, mw
}

// A response of known length reaches the client whole only when it is
// released (once its settlement is in the journal).
func TestMeteredWriterHoldsTheLastByte(t *testing.T) {
	rec, mw := answer(t, context.Background(), true)

	if got, want := rec.Body.String(), jsonAnswer[:len(jsonAnswer)-1]; got != want {
		t.Fatalf("before release the client has %q; want all but the last byte", got)
	}
	if rec.Flushed {
		t.Fatal("flushed before release")
	}
	mw.release(true)
	if got := rec.Body.String(); got != jsonAnswer {
		t.Fatalf("after release the client has %q; want the whole body", got)
	}
	if !rec.Flushed {
		t.Fatal("not flushed on release")
	}
	mw.release(true) // finish's deferred call sends nothing twice
	if got := rec.Body.String(); got != jsonAnswer {
		t.Fatalf("after a second release the client has %q", got)
	}
	// The meter saw every byte.
	_ = mw.obs.Close(bytes.NewBuffer(nil))
	if !mw.obs.Result().HasUsage {
		t.Fatal("the meter did not read the usage")
	}
}

// A response of unknown length (a stream) is not held back.
func TestMeteredWriterUnknownLengthNotHeld(t *testing.T) {
	rec, mw := answer(t, context.Background(), false)
	_ = mw.obs.Close(mw.client)
	if got := rec.Body.String(); got != jsonAnswer {
		t.Fatalf("client has %q; want the whole body without a release", got)
	}
}

// A client that left, or a response cut short (aborted), gets no held byte.
func TestMeteredWriterHeldByteDroppedWhenGone(t *testing.T) {
	for _, tc := range []struct {
		name string
		gone bool
		send bool
	}{{"client gone", true, true}, {"aborted", false, false}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rec, mw := answer(t, ctx, true)
			if tc.gone {
				cancel()
				_, _ = mw.client.send([]byte{}) // the writer notices the client left
			}
			mw.release(tc.send)
			if got, want := rec.Body.String(), jsonAnswer[:len(jsonAnswer)-1]; got != want {
				t.Fatalf("client has %q; want the held byte dropped", got)
			}
			if rec.Flushed {
				t.Fatal("flushed a response with no client")
			}
		})
	}
}

// More bytes than the declared length are passed on (the server refuses
// them), not held.
func TestMeteredWriterExcessNotHeld(t *testing.T) {
	rec := httptest.NewRecorder()
	mw := newTestMeteredWriter(t, rec, context.Background())
	mw.Header().Set("Content-Length", "5")
	mw.WriteHeader(http.StatusOK)
	if _, err := mw.client.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if mw.holding || rec.Body.String() != "0123456789" {
		t.Fatalf("holding=%v body=%q", mw.holding, rec.Body.String())
	}
}
