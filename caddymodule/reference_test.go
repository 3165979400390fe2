package caddymodule

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// referencePath is the operator's manual this test keeps complete.
const referencePath = "../docs/reference.md"

// TestReferenceComplete checks that docs/reference.md names everything an
// operator or API client can meet: every Caddyfile directive, option and
// keyword the parsers accept, every admin route, every CLI command and
// flag, every metric with its labels, and every API error code with its
// type and status. The names are collected from the code (go/ast, the
// cobra tree, the collectors), so a new one fails here until documented.
func TestReferenceComplete(t *testing.T) {
	b, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	spans := codeSpans(doc)
	files := parsePackage(t)

	t.Run("caddyfile", func(t *testing.T) {
		names := caddyfileNames(files)
		if len(names) < 20 {
			t.Fatalf("found only %d Caddyfile names in the parsers: %v", len(names), names)
		}
		var missing []string
		for _, n := range names {
			if !spanStartsWith(spans, n) {
				missing = append(missing, n)
			}
		}
		report(t, "Caddyfile directives/options/keywords (each needs an inline code span starting with it)", missing)
	})

	t.Run("admin", func(t *testing.T) {
		routes := adminRoutes(files)
		if len(routes) == 0 {
			t.Fatal("found no route table in (*AdminAPI).Routes")
		}
		var missing []string
		for _, r := range routes {
			if !spanStartsWith(spans, r) {
				missing = append(missing, r)
			}
		}
		report(t, "admin routes (each needs a code span like `GET /aitoken/…`)", missing)
	})

	t.Run("cli", func(t *testing.T) {
		root := &cobra.Command{Use: "aitoken"}
		buildCLI(root)
		var missing []string
		var walk func(c *cobra.Command, path string)
		walk = func(c *cobra.Command, path string) {
			if !spanStartsWith(spans, path) {
				missing = append(missing, path)
			}
			check := func(f *flagInfo) {
				if !strings.Contains(doc, "--"+f.name) {
					missing = append(missing, path+" --"+f.name)
				}
				if f.short != "" && !strings.Contains(doc, "-"+f.short+" ") && !strings.Contains(doc, "-"+f.short+",") {
					missing = append(missing, path+" -"+f.short)
				}
			}
			for _, f := range flagsOf(c) {
				check(&f)
			}
			for _, sub := range c.Commands() {
				walk(sub, path+" "+sub.Name())
			}
		}
		walk(root, "caddy aitoken")
		report(t, "CLI commands and flags", missing)
	})

	t.Run("metrics", func(t *testing.T) {
		descs := metricDescs(t)
		var missing []string
		for name, labels := range descs {
			line := lineWith(doc, "`"+name+"`")
			if line == "" {
				missing = append(missing, name)
				continue
			}
			for _, l := range labels {
				if !strings.Contains(line, "`"+l+"`") {
					missing = append(missing, name+" label "+l)
				}
			}
		}
		report(t, "metrics (a line with `name` and each `label`)", missing)
	})

	t.Run("errors", func(t *testing.T) {
		errs := apiErrors(t, files)
		if len(errs) < 10 {
			t.Fatalf("found only %d apiError literals", len(errs))
		}
		var missing []string
		for _, e := range errs {
			if !anyLine(doc, "`"+e.code+"`", "`"+e.typ+"`", strconv.Itoa(e.status)) {
				missing = append(missing, e.code+" ("+strconv.Itoa(e.status)+", "+e.typ+")")
			}
		}
		report(t, "API errors (a line with the `code`, its `type` and its status)", missing)
	})
}

// TestDocCaddyfileBlocks adapts every ```caddyfile block of README.md and
// docs/*.md and fails on an error or any warning, "not formatted"
// included. A block that is part of a config says so on the line before
// its fence: <!-- caddyfile: global --> (inside the global options) or
// <!-- caddyfile: site --> (inside a site block); it is wrapped in one and
// indented before adapting.
func TestDocCaddyfileBlocks(t *testing.T) {
	docs, _ := filepath.Glob("../docs/*.md")
	docs = append(docs, "../README.md")
	n := 0
	for _, path := range docs {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, blk := range caddyfileBlocks(string(b)) {
			n++
			body := blk.text
			switch blk.wrap {
			case "":
			case "global":
				body = "{\n" + indent(body) + "}\n"
			case "site":
				body = "example.com {\n" + indent(body) + "}\n"
			default:
				t.Errorf("%s:%d: unknown caddyfile marker %q (want global or site)", path, blk.line, blk.wrap)
				continue
			}
			_, warns, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), map[string]any{"filename": "block"})
			if err != nil {
				t.Errorf("%s:%d: the caddyfile block does not adapt: %v\n%s", path, blk.line, err, body)
				continue
			}
			for _, w := range warns {
				t.Errorf("%s:%d: warning at line %d of the block: %s\n%s", path, blk.line, w.Line, w.Message, body)
			}
		}
	}
	if n < 5 {
		t.Errorf("found only %d caddyfile blocks", n)
	}
}

type docBlock struct {
	text, wrap string
	line       int
}

var markerRE = regexp.MustCompile(`^<!-- caddyfile: (\w+) -->$`)

// caddyfileBlocks returns the ```caddyfile blocks of a Markdown text.
func caddyfileBlocks(md string) []docBlock {
	var out []docBlock
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```caddyfile" {
			continue
		}
		blk := docBlock{line: i + 1}
		if i > 0 {
			if m := markerRE.FindStringSubmatch(strings.TrimSpace(lines[i-1])); m != nil {
				blk.wrap = m[1]
			}
		}
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		blk.text = strings.Join(body, "\n") + "\n"
		out = append(out, blk)
	}
	return out
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if l != "" {
			b.WriteString("\t")
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

func report(t *testing.T, what string, missing []string) {
	t.Helper()
	if len(missing) > 0 {
		slices.Sort(missing)
		t.Errorf("%s missing from %s:\n\t%s", what, referencePath, strings.Join(slices.Compact(missing), "\n\t"))
	}
}

var spanRE = regexp.MustCompile("`([^`\n]+)`")

// codeSpans returns the text of every inline code span.
func codeSpans(md string) []string {
	var out []string
	for _, m := range spanRE.FindAllStringSubmatch(md, -1) {
		out = append(out, m[1])
	}
	return out
}

// spanStartsWith reports whether a span is name or starts with name
// followed by a space, '?', '|', '{' or '['.
func spanStartsWith(spans []string, name string) bool {
	for _, s := range spans {
		if rest, ok := strings.CutPrefix(s, name); ok && (rest == "" || strings.ContainsRune(" ?|{[", rune(rest[0]))) {
			return true
		}
	}
	return false
}

// lineWith returns the first line of doc containing s, or "".
func lineWith(doc, s string) string {
	for _, l := range strings.Split(doc, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// anyLine reports whether a line of doc contains every one of parts (the
// last as a whole word).
func anyLine(doc string, parts ...string) bool {
	word := regexp.MustCompile(`\b` + regexp.QuoteMeta(parts[len(parts)-1]) + `\b`)
	for _, l := range strings.Split(doc, "\n") {
		ok := word.MatchString(l)
		for _, p := range parts[:len(parts)-1] {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// parsePackage parses this package's non-test Go files.
func parsePackage(t *testing.T) []*ast.File {
	paths, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// caddyfileNames collects the directive and global option names registered
// with httpcaddyfile, and the string case labels of every function that
// reads a *caddyfile.Dispenser or an httpcaddyfile.Helper: every option,
// sub-option and keyword the parsers accept.
func caddyfileNames(files []*ast.File) []string {
	seen := map[string]bool{}
	add := func(lit ast.Expr) {
		if bl, ok := lit.(*ast.BasicLit); ok && bl.Kind == token.STRING {
			if s, err := strconv.Unquote(bl.Value); err == nil && s != "" {
				seen[s] = true
			}
		}
	}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && len(n.Args) > 0 {
					if x, ok := sel.X.(*ast.Ident); ok && x.Name == "httpcaddyfile" &&
						(sel.Sel.Name == "RegisterGlobalOption" || sel.Sel.Name == "RegisterHandlerDirective" || sel.Sel.Name == "RegisterDirective") {
						add(n.Args[0])
					}
				}
			case *ast.FuncDecl:
				if !readsCaddyfile(n.Type) || n.Body == nil {
					return true
				}
				ast.Inspect(n.Body, func(m ast.Node) bool {
					if cc, ok := m.(*ast.CaseClause); ok {
						for _, e := range cc.List {
							add(e)
						}
					}
					return true
				})
			}
			return true
		})
	}
	var out []string
	for s := range seen {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// readsCaddyfile reports whether a function takes a *caddyfile.Dispenser
// or an httpcaddyfile.Helper.
func readsCaddyfile(ft *ast.FuncType) bool {
	for _, p := range ft.Params.List {
		typ := p.Type
		if st, ok := typ.(*ast.StarExpr); ok {
			typ = st.X
		}
		if sel, ok := typ.(*ast.SelectorExpr); ok {
			if x, ok := sel.X.(*ast.Ident); ok &&
				(x.Name == "caddyfile" && sel.Sel.Name == "Dispenser" || x.Name == "httpcaddyfile" && sel.Sel.Name == "Helper") {
				return true
			}
		}
	}
	return false
}

// adminRoutes collects the "METHOD /path" keys of the route table in
// (*AdminAPI).Routes.
func adminRoutes(files []*ast.File) []string {
	var out []string
	for _, f := range files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Name.Name != "Routes" || fd.Recv == nil || fd.Body == nil {
				continue
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				if kv, ok := n.(*ast.KeyValueExpr); ok {
					if bl, ok := kv.Key.(*ast.BasicLit); ok && bl.Kind == token.STRING {
						if s, err := strconv.Unquote(bl.Value); err == nil && strings.Contains(s, " /") {
							out = append(out, s)
						}
					}
				}
				return true
			})
		}
	}
	slices.Sort(out)
	return out
}

type flagInfo struct{ name, short string }

// flagsOf lists a command's own flags (the root's persistent ones too).
func flagsOf(c *cobra.Command) []flagInfo {
	var out []flagInfo
	c.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) { out = append(out, flagInfo{f.Name, f.Shorthand}) })
	if !c.HasParent() {
		c.PersistentFlags().VisitAll(func(f *pflag.Flag) { out = append(out, flagInfo{f.Name, f.Shorthand}) })
	}
	return out
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// metricDescs describes every collector of the metrics struct: name →
// variable labels.
func metricDescs(t *testing.T) map[string][]string {
	out := map[string][]string{}
	v := reflect.ValueOf(&metrics).Elem()
	for i := range v.NumField() {
		f := v.Field(i) // unexported: read through its address
		c, ok := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface().(prometheus.Collector)
		if !ok {
			t.Fatalf("metrics.%s is not a prometheus.Collector", v.Type().Field(i).Name)
		}
		ch := make(chan *prometheus.Desc, 16)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := fqNameRE.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read %s", d)
			}
			var labels []string
			for l := range strings.SplitSeq(m[2], ",") {
				if l = strings.TrimSpace(l); l != "" {
					labels = append(labels, l)
				}
			}
			out[m[1]] = labels
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d metrics", len(out))
	}
	return out
}

type apiErr struct {
	status    int
	typ, code string
}

// apiErrors collects every apiError literal: status, type and code.
func apiErrors(t *testing.T, files []*ast.File) []apiErr {
	statuses := map[string]int{}
	for code := 100; code < 600; code++ {
		if txt := http.StatusText(code); txt != "" {
			statuses["Status"+strings.NewReplacer(" ", "", "-", "", "'", "").Replace(txt)] = code
		}
	}
	var out []apiErr
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			cl, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			if id, ok := cl.Type.(*ast.Ident); !ok || id.Name != "apiError" {
				return true
			}
			if len(cl.Elts) < 3 {
				t.Fatalf("an apiError literal with %d elements", len(cl.Elts))
			}
			var e apiErr
			switch s := cl.Elts[0].(type) {
			case *ast.SelectorExpr:
				e.status = statuses[s.Sel.Name]
			case *ast.BasicLit:
				e.status, _ = strconv.Atoi(s.Value)
			}
			str := func(x ast.Expr) string {
				bl, _ := x.(*ast.BasicLit)
				if bl == nil {
					return ""
				}
				s, _ := strconv.Unquote(bl.Value)
				return s
			}
			e.typ, e.code = str(cl.Elts[1]), str(cl.Elts[2])
			if e.status == 0 || e.typ == "" || e.code == "" {
				t.Fatalf("cannot read an apiError literal: %#v", cl.Elts[:3])
			}
			out = append(out, e)
			return true
		})
	}
	return out
}
