package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRepoConfigResolves(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadBuilder(filepath.Join(root, "xcaddy.json"))
	if err != nil {
		t.Fatal(err)
	}
	if b.CaddyVersion != "v2.11.9" {
		t.Errorf("caddy_version = %q", b.CaddyVersion)
	}
	local, err := resolveLocalReplacements(&b, root)
	if err != nil {
		t.Fatal(err)
	}
	const mod = "github.com/cnaitoken/caddy-aitoken"
	if len(local) != 1 || local[0] != mod {
		t.Fatalf("local modules = %q", local)
	}
	if got := b.Replacements[0].New.String(); got != root {
		t.Errorf("replacement resolved to %q, want %q", got, root)
	}
	if len(b.Plugins) != 1 || b.Plugins[0].PackagePath != mod {
		t.Errorf("plugins = %+v", b.Plugins)
	}
}

func TestResolveKeepsModuleReplacements(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "x.json")
	err := os.WriteFile(cfg, []byte(`{"caddy_version":"v2.11.9","replacements":[
		{"old":"example.com/a","new":"example.com/b v1.2.3"},
		{"old":"example.com/c v1.0.0","new":"../missing"}]}`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadBuilder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resolveLocalReplacements(&b, dir); err == nil {
		t.Fatal("missing local replacement accepted")
	}
	b.Replacements = b.Replacements[:1]
	local, err := resolveLocalReplacements(&b, dir)
	if err != nil || len(local) != 0 || b.Replacements[0].New != "example.com/b v1.2.3" {
		t.Fatalf("module replacement changed: %v %q %+v", err, local, b.Replacements)
	}
}

func TestLoadBuilderRejectsUnknownFields(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "x.json")
	if err := os.WriteFile(cfg, []byte(`{"caddy_version":"v2.11.9","plugin":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadBuilder(cfg); err == nil {
		t.Fatal("typo accepted")
	}
}

func TestIsLocalPath(t *testing.T) {
	for p, want := range map[string]bool{
		"./": true, ".": true, "../x": true, "/abs": true,
		"example.com/x": false, "example.com/x v1.0.0": false,
	} {
		if got := isLocalPath(p); got != want {
			t.Errorf("isLocalPath(%q) = %v", p, got)
		}
	}
}
