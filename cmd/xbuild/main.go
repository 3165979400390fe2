// Command xbuild builds the custom caddy binary described by xcaddy.json with
// xcaddy's builder package, so no xcaddy binary has to be installed.
//
// Usage (from anywhere inside the repository):
//
//	go run ./cmd/xbuild [-config xcaddy.json] [-o bin/caddy]
//
// Replacements whose new side is a local directory ("./", "../x") are resolved
// against the directory holding the config file. The modules they replace are
// not published, so the build must never ask a module proxy or a VCS host for
// them: xbuild marks those paths GONOPROXY, GONOSUMDB and GOVCS=off before
// running the builder. `go get` then gets a "not found" for them without any
// network traffic, and falls back to the local replacement (the main module's
// wildcard replace synthesizes v0.0.0-00010101000000-000000000000).
// Every other module is fetched as usual.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/caddyserver/xcaddy"
)

func main() {
	log.SetFlags(0)
	config := flag.String("config", "", "xcaddy build description (default: xcaddy.json at the repository root)")
	output := flag.String("o", "", "output binary (default: bin/caddy at the repository root)")
	flag.Parse()

	if err := run(*config, *output); err != nil {
		log.Fatalf("xbuild: %v", err)
	}
}

func run(config, output string) error {
	if config == "" {
		root, err := repoRoot()
		if err != nil {
			return err
		}
		config = filepath.Join(root, "xcaddy.json")
		if output == "" {
			output = filepath.Join(root, "bin", "caddy")
		}
	}
	if output == "" {
		output = filepath.Join("bin", "caddy")
	}
	config, err := filepath.Abs(config)
	if err != nil {
		return err
	}
	output, err = filepath.Abs(output)
	if err != nil {
		return err
	}

	b, err := loadBuilder(config)
	if err != nil {
		return err
	}
	local, err := resolveLocalReplacements(&b, filepath.Dir(config))
	if err != nil {
		return err
	}
	if err := isolateLocalModules(local); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(output), 0o755); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return b.Build(ctx, output)
}

// loadBuilder reads an xcaddy build description (the JSON form of xcaddy.Builder).
func loadBuilder(path string) (xcaddy.Builder, error) {
	var b xcaddy.Builder
	data, err := os.ReadFile(path)
	if err != nil {
		return b, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return b, fmt.Errorf("%s: %w", path, err)
	}
	if b.CaddyVersion == "" {
		return b, fmt.Errorf("%s: caddy_version is required", path)
	}
	return b, nil
}

// resolveLocalReplacements rewrites replacements that point at a relative
// directory to absolute paths (the builder runs go in a temporary folder) and
// returns the module paths they replace.
func resolveLocalReplacements(b *xcaddy.Builder, base string) ([]string, error) {
	var local []string
	for i, r := range b.Replacements {
		n := r.New.String()
		if !isLocalPath(n) {
			continue
		}
		if !filepath.IsAbs(n) {
			n = filepath.Join(base, n)
		}
		if _, err := os.Stat(filepath.Join(n, "go.mod")); err != nil {
			return nil, fmt.Errorf("replacement %s => %s: %w", r.Old, n, err)
		}
		b.Replacements[i].New = xcaddy.ReplacementPath(n)
		old, _, _ := strings.Cut(r.Old.String(), " ") // "path version" form
		local = append(local, old)
	}
	return local, nil
}

// isLocalPath reports whether a replace target is a directory, as go.mod
// defines it: an absolute path or one starting with ./ or ../.
func isLocalPath(p string) bool {
	return filepath.IsAbs(p) || p == "." || p == ".." ||
		strings.HasPrefix(p, "./") || strings.HasPrefix(p, "../")
}

// isolateLocalModules makes the go command treat the given module paths as
// private and unfetchable, so a lookup of them fails locally with "not found"
// (GONOPROXY skips the proxy, GOVCS=off stops the direct VCS fetch before any
// network traffic) and the local replacement is used.
func isolateLocalModules(paths []string) error {
	if len(paths) == 0 {
		return nil
	}
	cur, err := goEnv("GONOPROXY", "GONOSUMDB", "GOVCS")
	if err != nil {
		return err
	}
	list := strings.Join(paths, ",")
	offs := make([]string, len(paths))
	for i, p := range paths {
		offs[i] = p + ":off"
	}
	set := map[string]string{
		"GONOPROXY": joinNonEmpty(list, cur["GONOPROXY"]),
		"GONOSUMDB": joinNonEmpty(list, cur["GONOSUMDB"]),
		"GOVCS":     joinNonEmpty(strings.Join(offs, ","), cur["GOVCS"]),
	}
	for k, v := range set {
		if err := os.Setenv(k, v); err != nil {
			return err
		}
		log.Printf("[INFO] %s=%s", k, v)
	}
	return nil
}

func joinNonEmpty(a, b string) string {
	if b == "" {
		return a
	}
	return a + "," + b
}

// goEnv returns the effective values of go environment variables (including
// those set with go env -w and the GOPRIVATE defaults).
func goEnv(names ...string) (map[string]string, error) {
	out, err := exec.Command(goCmd(), append([]string{"env", "-json"}, names...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("go env: %w", err)
	}
	m := make(map[string]string, len(names))
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("go env: %w", err)
	}
	return m, nil
}

// goCmd is the go command the builder uses as well.
func goCmd() string {
	if g := os.Getenv("XCADDY_WHICH_GO"); g != "" {
		return g
	}
	return "go"
}

// repoRoot walks up from the working directory to the directory holding
// xcaddy.json.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "xcaddy.json")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("xcaddy.json not found in the working directory or its parents")
		}
		dir = parent
	}
}
