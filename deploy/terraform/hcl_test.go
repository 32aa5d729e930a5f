// Package terraform_test checks the Terraform deployment in this folder
// without Terraform or a cloud account: it parses every .tf file with
// hashicorp/hcl/v2 and checks the rules the deployment must keep (every
// variable described and typed, every region running both servers, health
// checks on /healthz, a connect-string output, canonical formatting), and
// evaluates the few expressions whose logic matters (region slots, the
// server's peer ID) with cty implementations of the Terraform functions
// they use.
package terraform_test

import (
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// moduleDir is where the region module lives, relative to the root.
const moduleDir = "modules/region"

// tfModule is the parsed .tf files of one Terraform module (one folder).
type tfModule struct {
	dir   string
	files map[string]*hclsyntax.Body // file name -> body
	src   map[string][]byte
}

// config is a root module and the modules in its subfolders, by folder
// relative to the root ("." for the root).
type config map[string]*tfModule

// loadConfig parses every .tf file under root, skipping .terraform folders.
func loadConfig(t testing.TB, root string) config {
	t.Helper()
	c := config{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".terraform" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || filepath.Ext(path) != ".tf" {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		m := c[rel]
		if m == nil {
			m = &tfModule{dir: rel, files: map[string]*hclsyntax.Body{}, src: map[string][]byte{}}
			c[rel] = m
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, diags := hclsyntax.ParseConfig(b, path, hcl.InitialPos)
		if diags.HasErrors() {
			return fmt.Errorf("parse: %s", diags.Error())
		}
		m.files[d.Name()] = f.Body.(*hclsyntax.Body)
		m.src[d.Name()] = b
		return nil
	})
	if err != nil {
		t.Fatalf("load %s: %v", root, err)
	}
	if c["."] == nil {
		t.Fatalf("load %s: no .tf files", root)
	}
	return c
}

// block is one top-level block with the file it is in.
type block struct {
	file string
	*hclsyntax.Block
}

func (b block) where() string {
	return fmt.Sprintf("%s:%d", b.file, b.TypeRange.Start.Line)
}

func (b block) name() string {
	return b.Type + " " + strings.Join(b.Labels, ".")
}

// blocks returns the module's top-level blocks of a type, sorted by file and
// line, optionally only those whose first label is one of labels.
func (m *tfModule) blocks(typ string, labels ...string) []block {
	var out []block
	for name, body := range m.files {
		for _, b := range body.Blocks {
			if b.Type != typ {
				continue
			}
			if len(labels) > 0 && (len(b.Labels) == 0 || !slices.Contains(labels, b.Labels[0])) {
				continue
			}
			out = append(out, block{file: name, Block: b})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].file != out[j].file {
			return out[i].file < out[j].file
		}
		return out[i].TypeRange.Start.Line < out[j].TypeRange.Start.Line
	})
	return out
}

// locals returns every attribute of the module's locals blocks by name.
func (m *tfModule) locals() map[string]*hclsyntax.Attribute {
	out := map[string]*hclsyntax.Attribute{}
	for _, b := range m.blocks("locals") {
		for name, a := range b.Body.Attributes {
			out[name] = a
		}
	}
	return out
}

// childBlocks returns the nested blocks of a type.
func childBlocks(b *hclsyntax.Block, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, c := range b.Body.Blocks {
		if c.Type == typ {
			out = append(out, c)
		}
	}
	return out
}

// literalString returns the value of a constant string expression.
func literalString(e hclsyntax.Expression) (string, bool) {
	if e == nil || len(e.Variables()) > 0 {
		return "", false
	}
	v, diags := e.Value(nil)
	if diags.HasErrors() || v.Type() != cty.String || !v.IsKnown() || v.IsNull() {
		return "", false
	}
	return v.AsString(), true
}

// traversalString returns "a.b.c" for a plain reference expression.
func traversalString(e hclsyntax.Expression) (string, bool) {
	st, ok := e.(*hclsyntax.ScopeTraversalExpr)
	if !ok {
		return "", false
	}
	var parts []string
	for _, step := range st.Traversal {
		switch s := step.(type) {
		case hcl.TraverseRoot:
			parts = append(parts, s.Name)
		case hcl.TraverseAttr:
			parts = append(parts, s.Name)
		default:
			return "", false
		}
	}
	return strings.Join(parts, "."), true
}

// references reports whether expression e refers to the dotted name (for
// example "var.admin_port" or "local.ports.admin").
func references(e hclsyntax.Expression, name string) bool {
	for _, tr := range e.Variables() {
		var parts []string
		for _, step := range tr {
			switch s := step.(type) {
			case hcl.TraverseRoot:
				parts = append(parts, s.Name)
			case hcl.TraverseAttr:
				parts = append(parts, s.Name)
			}
		}
		if strings.HasPrefix(strings.Join(parts, ".")+".", name+".") {
			return true
		}
	}
	return false
}

// objectKeys returns the keys of an object constructor expression, and the
// value expression of each.
func objectKeys(e hclsyntax.Expression) (map[string]hclsyntax.Expression, bool) {
	oc, ok := e.(*hclsyntax.ObjectConsExpr)
	if !ok {
		return nil, false
	}
	out := map[string]hclsyntax.Expression{}
	for _, item := range oc.Items {
		if ck, ok := item.KeyExpr.(*hclsyntax.ObjectConsKeyExpr); ok {
			if ref, ok := traversalString(ck.Wrapped); ok {
				// A bare key (aws, or aws.primary in providers = {...}).
				out[ref] = item.ValueExpr
				continue
			}
		}
		k, diags := item.KeyExpr.Value(nil)
		if diags.HasErrors() || k.Type() != cty.String {
			// A bare identifier key is a keyword, not a variable.
			kw := hcl.ExprAsKeyword(item.KeyExpr)
			if kw == "" {
				return nil, false
			}
			out[kw] = item.ValueExpr
			continue
		}
		out[k.AsString()] = item.ValueExpr
	}
	return out, true
}

// tfFuncs returns cty implementations of the Terraform functions the
// evaluated expressions use. Most are go-cty's own (Terraform uses the same);
// index, alltrue and cidrhost are written here with Terraform's meaning.
func tfFuncs() map[string]function.Function {
	return map[string]function.Function{
		"alltrue":   allTrueFunc,
		"can":       tryfunc.CanFunc,
		"cidrhost":  cidrHostFunc,
		"concat":    stdlib.ConcatFunc,
		"contains":  stdlib.ContainsFunc,
		"distinct":  stdlib.DistinctFunc,
		"floor":     stdlib.FloorFunc,
		"format":    stdlib.FormatFunc,
		"index":     indexOfFunc,
		"join":      stdlib.JoinFunc,
		"length":    stdlib.LengthFunc,
		"lower":     stdlib.LowerFunc,
		"merge":     stdlib.MergeFunc,
		"parseint":  stdlib.ParseIntFunc,
		"range":     stdlib.RangeFunc,
		"regex":     stdlib.RegexFunc,
		"slice":     stdlib.SliceFunc,
		"split":     stdlib.SplitFunc,
		"substr":    stdlib.SubstrFunc,
		"trimspace": stdlib.TrimSpaceFunc,
		"try":       tryfunc.TryFunc,
	}
}

// indexOfFunc is Terraform's index(list, value): the position of the first
// element equal to value.
var indexOfFunc = function.New(&function.Spec{
	Params: []function.Parameter{
		{Name: "list", Type: cty.DynamicPseudoType},
		{Name: "value", Type: cty.DynamicPseudoType},
	},
	Type: function.StaticReturnType(cty.Number),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		if !args[0].CanIterateElements() {
			return cty.NilVal, fmt.Errorf("index: first argument must be a list")
		}
		i := 0
		for it := args[0].ElementIterator(); it.Next(); i++ {
			_, v := it.Element()
			if v.Equals(args[1]).True() {
				return cty.NumberIntVal(int64(i)), nil
			}
		}
		return cty.NilVal, fmt.Errorf("index: item not found")
	},
})

// allTrueFunc is Terraform's alltrue(list of bool).
var allTrueFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "list", Type: cty.List(cty.Bool)}},
	Type:   function.StaticReturnType(cty.Bool),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		for it := args[0].ElementIterator(); it.Next(); {
			_, v := it.Element()
			if v.IsNull() || !v.True() {
				return cty.False, nil
			}
		}
		return cty.True, nil
	},
})

// cidrHostFunc is Terraform's cidrhost(prefix, hostnum), IPv4 only.
var cidrHostFunc = function.New(&function.Spec{
	Params: []function.Parameter{
		{Name: "prefix", Type: cty.String},
		{Name: "hostnum", Type: cty.Number},
	},
	Type: function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		p, err := netip.ParsePrefix(args[0].AsString())
		if err != nil || !p.Addr().Is4() {
			return cty.NilVal, fmt.Errorf("cidrhost: invalid IPv4 CIDR %q", args[0].AsString())
		}
		n, _ := args[1].AsBigFloat().Int(nil)
		size := new(big.Int).Lsh(big.NewInt(1), uint(32-p.Bits()))
		if n.Sign() < 0 || n.Cmp(size) >= 0 {
			return cty.NilVal, fmt.Errorf("cidrhost: host number %v out of range", n)
		}
		base := p.Masked().Addr().As4()
		v := new(big.Int).SetBytes(base[:])
		v.Add(v, n)
		var out [4]byte
		v.FillBytes(out[:])
		return cty.StringVal(netip.AddrFrom4(out).String()), nil
	},
})

// evalContext returns an evaluation context with the functions above and
// the given variables (var, local, ... as objects).
func evalContext(vars map[string]cty.Value) *hcl.EvalContext {
	return &hcl.EvalContext{Variables: vars, Functions: tfFuncs()}
}

// evalLocals evaluates the named locals of m in order, each seeing the ones
// before it, with var set to vars, and returns the local object.
func evalLocals(m *tfModule, vars cty.Value, names ...string) (cty.Value, error) {
	return evalLocalsWith(m, map[string]cty.Value{"var": vars}, names...)
}

// evalLocalsWith is evalLocals with more root names (resources, say) in
// scope.
func evalLocalsWith(m *tfModule, scope map[string]cty.Value, names ...string) (cty.Value, error) {
	all := m.locals()
	locals := map[string]cty.Value{}
	for _, n := range names {
		a, ok := all[n]
		if !ok {
			return cty.NilVal, fmt.Errorf("no local %q in %s", n, m.dir)
		}
		vars := map[string]cty.Value{"local": cty.ObjectVal(locals)}
		for k, v := range scope {
			vars[k] = v
		}
		ctx := evalContext(vars)
		v, diags := a.Expr.Value(ctx)
		if diags.HasErrors() {
			return cty.NilVal, fmt.Errorf("local.%s: %s", n, diags.Error())
		}
		locals[n] = v
	}
	return cty.ObjectVal(locals), nil
}
