package caddymodule

import (
	"compress/gzip"
	"compress/zlib"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/cnaitoken/caddy-aitoken/meter"
)

// compressedFeed lets the meter read a body the upstream compressed even
// though the gateway asked for identity: the client gets the original bytes,
// and a decoder goroutine feeds the decompressed copy to the meter. Hiding
// the injected usage chunk is not possible in a compressed body, so the
// client may see it there.
type compressedFeed struct {
	pw   *io.PipeWriter
	done chan struct{}
}

// newCompressedFeed starts decoding for encoding enc, or returns nil when
// the meter cannot read that encoding (it then bills an estimate).
func newCompressedFeed(enc string, obs *meter.Observer) *compressedFeed {
	enc = strings.ToLower(strings.TrimSpace(enc))
	switch enc {
	case "gzip", "x-gzip", "deflate", "zstd":
	default:
		return nil
	}
	pr, pw := io.Pipe()
	f := &compressedFeed{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		// Whatever happens, keep reading so the response never blocks.
		defer func() { _, _ = io.Copy(io.Discard, pr) }()
		var r io.Reader
		switch enc {
		case "gzip", "x-gzip":
			zr, err := gzip.NewReader(pr)
			if err != nil {
				return
			}
			r = zr
		case "deflate":
			zr, err := zlib.NewReader(pr)
			if err != nil {
				return
			}
			r = zr
		case "zstd":
			zr, err := zstd.NewReader(pr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20))
			if err != nil {
				return
			}
			defer zr.Close()
			r = zr
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				_ = obs.Feed(io.Discard, buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	return f
}

// write hands the compressed bytes p to the decoder.
func (f *compressedFeed) write(p []byte) { _, _ = f.pw.Write(p) }

// close ends the body and waits until the meter has seen all of it.
func (f *compressedFeed) close() {
	_ = f.pw.Close()
	<-f.done
}
