// Command mockupstream serves the bundled mock model provider
// (internal/mockupstream) for `make run` and manual testing.
//
//	go run ./cmd/mockupstream -addr 127.0.0.1:8081
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cnaitoken/caddy-aitoken/internal/mockupstream"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address (port 0 picks a free port)")
	flag.Parse()
	log.SetFlags(0)
	if err := run(*addr); err != nil {
		log.Fatalf("mockupstream: %v", err)
	}
}

func run(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mockupstream.New(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("mockupstream listening on http://%s\n", ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
