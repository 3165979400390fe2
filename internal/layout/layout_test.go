package layout

import (
	"os/exec"
	"strings"
	"testing"
)

// module is this repository's module path.
const module = "github.com/cnaitoken/caddy-aitoken"

// layers ranks the product packages: a package may import only packages
// of a lower rank. Caddy glue on top; the customers' dashboard; the
// workflows that keep the ledger and Redis in step; the Stripe rules and
// the settlement pipeline; the state (Redis accounts, the SQLite ledger);
// the pure leaves.
var layers = map[string]int{
	"":              7, // the root: registers the modules
	"caddymodule":   6,
	"dashboard":     5,
	"accounting":    4,
	"payments":      3,
	"settle":        3,
	"lease":         3,
	"billing":       2,
	"usagelog":      2,
	"meter":         1,
	"billing/money": 1,
	"jsonenc":       1,
}

// leaves import nothing of this module.
var leaves = []string{"meter", "billing/money", "jsonenc"}

// TestImportsPointDown holds the package layout: imports go down the
// layers only (so no package can reach back up through a third), the
// leaves import nothing of ours, and product code never imports a test
// kit (internal/) or a command (cmd/).
func TestImportsPointDown(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := ours(fields[0])
		if strings.HasPrefix(pkg, "cmd/") || strings.HasPrefix(pkg, "internal/") || pkg == "e2e" {
			continue // tools, test kits and tests may use anything
		}
		rank, known := layers[pkg]
		if !known {
			t.Errorf("package %q has no place in the layers of layout_test.go: give it one", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			dep := ours(imp)
			for _, leaf := range leaves {
				if pkg == leaf {
					t.Errorf("%s is a leaf but imports %s", pkg, dep)
				}
			}
			switch depRank, ok := layers[dep]; {
			case strings.HasPrefix(dep, "internal/") || strings.HasPrefix(dep, "cmd/"):
				t.Errorf("product package %s imports %s, which is for tests and tools only", pkg, dep)
			case !ok:
				t.Errorf("%s imports %s, which has no place in the layers", pkg, dep)
			case depRank >= rank:
				t.Errorf("%s (layer %d) imports %s (layer %d): imports must point down", pkg, rank, dep, depRank)
			}
		}
	}
}

// ours returns a package's path inside the module ("" for the root).
func ours(path string) string {
	return strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
}
