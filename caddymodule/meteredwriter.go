package caddymodule

import (
	"context"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/meter"
)

// meteredWriter forwards every write to the client at once while the
// meter observes the same bytes.
type meteredWriter struct {
	*caddyhttp.ResponseWriterWrapper
	obs       *meter.Observer
	client    clientSink
	clientCtx context.Context
	// cancelOnGone returns the client's write errors, so reverse_proxy
	// stops (on_client_gone cancel); otherwise, once the client is gone,
	// writes are dropped and the upstream is still read to its end.
	cancelOnGone bool
	// upstream is the upstream request's context, when it outlives the
	// client's (on_client_gone finish).
	upstream context.Context
	// gone is set when the client went away while the response was still
	// being sent.
	gone        bool
	hiding      bool
	wroteHeader bool
	status      int
	firstByte   time.Time
	upstreamErr error
	// compressed is set when the upstream compressed the body anyway.
	compressed *compressedFeed
	// unreadable is set when the body is in an encoding the meter cannot read.
	unreadable bool
}

func newMeteredWriter(w http.ResponseWriter, r *http.Request, req *meter.Request, cancelOnGone bool) *meteredWriter {
	m := &meteredWriter{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		obs:                   meter.NewObserver(req),
		hiding:                req.InjectedUsage && !req.ClientWantsUsage,
		clientCtx:             r.Context(),
		cancelOnGone:          cancelOnGone,
	}
	m.client = clientSink{m}
	return m
}

// clientSink is where the meter sends the bytes for the client.
type clientSink struct{ m *meteredWriter }

// Write sends p to the client. Once the client is gone (its context ended
// or a write failed) and the upstream is to be read to its end, it drops p
// and reports success, so reverse_proxy keeps reading the upstream.
func (c clientSink) Write(p []byte) (int, error) {
	m := c.m
	if m.cancelOnGone {
		return m.ResponseWriter.Write(p)
	}
	if m.gone || m.clientCtx.Err() != nil {
		m.gone = true
		return len(p), nil
	}
	n, err := m.ResponseWriter.Write(p)
	if err != nil {
		m.gone = true
		return len(p), nil
	}
	return n, nil
}

// WriteHeader starts the meter on the final status.
func (m *meteredWriter) WriteHeader(code int) {
	if m.wroteHeader {
		return
	}
	if code < 200 {
		m.ResponseWriter.WriteHeader(code)
		return
	}
	m.wroteHeader, m.status = true, code
	m.obs.Start(code, m.Header().Get("Content-Type"))
	if enc := m.Header().Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		m.compressed = newCompressedFeed(enc, m.obs)
		m.unreadable = m.compressed == nil
		m.hiding = false
	}
	if m.hiding {
		// A hidden usage chunk changes the length.
		m.Header().Del("Content-Length")
	}
	m.ResponseWriter.WriteHeader(code)
}

// Write forwards p (less a hidden usage chunk) and lets the meter see it.
func (m *meteredWriter) Write(p []byte) (int, error) {
	if !m.wroteHeader {
		m.WriteHeader(http.StatusOK)
	}
	if m.firstByte.IsZero() && len(p) > 0 {
		m.firstByte = time.Now()
	}
	if m.compressed != nil || m.unreadable {
		n, err := m.client.Write(p)
		if m.compressed != nil && n > 0 {
			m.compressed.write(p[:n])
		}
		return n, err
	}
	if err := m.obs.Feed(m.client, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ReadFrom copies through Write, so the meter sees every byte.
func (m *meteredWriter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{m}, r)
}

type writerOnly struct{ io.Writer }
