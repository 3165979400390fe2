package caddymodule

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cnaitoken/caddy-aitoken/meter"
)

// meteredWriter forwards every write to the client at once while the
// meter observes the same bytes.
type meteredWriter struct {
	caddyhttp.ResponseWriterWrapper
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
	// left counts the bytes of a response of known length still to be
	// sent to the client (-1 when the length is unknown). The last one is
	// held back until the settlement is written ahead to the journal
	// (release): a client that has the whole response has been billed,
	// even if the process dies right after.
	left     int64
	holding  bool
	held     [1]byte
	released bool
	// detach is the upstream request's own context, under on_client_gone
	// finish.
	detach detached
	// log holds the access log's aitoken_* fields (see finish).
	log logFields
	// body is the request body as it goes upstream, and identity the
	// upstream request's Accept-Encoding: here, they cost no allocation
	// of their own.
	body     requestBody
	identity [1]string
}

func newMeteredWriter(w http.ResponseWriter, r *http.Request, req *meter.Request, cancelOnGone bool) *meteredWriter {
	m := &meteredWriter{
		ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		obs:                   meter.NewObserver(req),
		hiding:                req.InjectedUsage && !req.ClientWantsUsage,
		clientCtx:             r.Context(),
		cancelOnGone:          cancelOnGone,
		left:                  -1,
		identity:              [1]string{"identity"},
	}
	m.client = clientSink{m}
	return m
}

// clientSink is where the meter sends the bytes for the client.
type clientSink struct{ m *meteredWriter }

// Write sends p to the client, holding back the last byte of a response
// of known length (see meteredWriter.left).
func (c clientSink) Write(p []byte) (int, error) {
	m := c.m
	if m.left < 0 || int64(len(p)) < m.left {
		if m.left > 0 {
			m.left -= int64(len(p))
		}
		return c.send(p)
	}
	if int64(len(p)) > m.left {
		// More than the declared length: the server refuses the excess.
		m.left = -1
		return c.send(p)
	}
	last := len(p) - 1
	m.left, m.holding, m.held[0] = 0, true, p[last]
	n, err := c.send(p[:last])
	if err != nil || n < last {
		m.holding = false
		return n, err
	}
	return len(p), nil
}

// send writes p to the client. Once the client is gone (its context ended
// or a write failed) and the upstream is to be read to its end, it drops p
// and reports success, so reverse_proxy keeps reading the upstream.
func (c clientSink) send(p []byte) (int, error) {
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
	h := m.Header()
	m.obs.Start(code, header(h, hdrContentType))
	if enc := header(h, hdrContentEncoding); enc != "" && !strings.EqualFold(enc, "identity") {
		m.compressed = newCompressedFeed(enc, m.obs)
		m.unreadable = m.compressed == nil
		m.hiding = false
	}
	if m.hiding {
		// A hidden usage chunk changes the length.
		delete(h, hdrContentLength)
	} else if n, err := strconv.ParseInt(header(h, hdrContentLength), 10, 64); err == nil && n > 0 {
		m.left = n
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

// release sends the held last byte, if any, and flushes the response, when
// send is set and the client is still there. It is called once the
// settlement is in the journal, or settled without it, and again (doing
// nothing more) when finish ends.
func (m *meteredWriter) release(send bool) {
	if !send || m.gone {
		m.holding = false
		return
	}
	if m.holding {
		m.holding = false
		if _, err := m.client.send(m.held[:]); err != nil {
			return
		}
	}
	if !m.released {
		m.released = true
		_ = http.NewResponseController(m).Flush()
	}
}

// ReadFrom copies through Write, so the meter sees every byte.
func (m *meteredWriter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{m}, r)
}

type writerOnly struct{ io.Writer }
