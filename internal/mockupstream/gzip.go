package mockupstream

import (
	"compress/gzip"
	"net/http"
)

// gzipWriter compresses a response (X-Mock-Gzip), as a provider that
// ignores Accept-Encoding would. Flushing it flushes the gzip stream first,
// so every SSE event reaches the client as soon as it is written.
type gzipWriter struct {
	http.ResponseWriter
	gz    *gzip.Writer
	wrote bool
}

func newGzipWriter(w http.ResponseWriter) *gzipWriter {
	return &gzipWriter{ResponseWriter: w, gz: gzip.NewWriter(w)}
}

// WriteHeader marks the body as gzip before the status goes out.
func (g *gzipWriter) WriteHeader(code int) {
	if !g.wrote {
		g.wrote = true
		h := g.Header()
		h.Set("Content-Encoding", "gzip")
		h.Del("Content-Length")
		h.Add("Vary", "Accept-Encoding")
	}
	g.ResponseWriter.WriteHeader(code)
}

// Write compresses p.
func (g *gzipWriter) Write(p []byte) (int, error) {
	if !g.wrote {
		g.WriteHeader(http.StatusOK)
	}
	return g.gz.Write(p)
}

// FlushError flushes the compressed bytes written so far to the client.
// (http.ResponseController prefers it to an Unwrap, which gzipWriter does
// not offer, so nothing can bypass the compression.)
func (g *gzipWriter) FlushError() error {
	if err := g.gz.Flush(); err != nil {
		return err
	}
	return http.NewResponseController(g.ResponseWriter).Flush()
}

// Close ends the gzip stream.
func (g *gzipWriter) Close() error {
	if !g.wrote {
		g.WriteHeader(http.StatusOK)
	}
	return g.gz.Close()
}
