package terraform_test

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
)

// The checks below each return the problems they find, one line each, so
// the tests can run them on the real configuration (want none) and on bad
// snippets (want some).

// checkFormatted reports every file that `terraform fmt` would change.
func checkFormatted(c config) []string {
	var out []string
	for _, m := range sortedModules(c) {
		for _, name := range sortedKeys(m.src) {
			b := m.src[name]
			if f := hclwrite.Format(b); !bytes.Equal(f, b) {
				out = append(out, fmt.Sprintf("%s/%s: not in canonical format (run `terraform fmt -recursive`); first difference at line %d", m.dir, name, firstDiffLine(b, f)))
			}
		}
	}
	return out
}

// checkVariables reports variables without a non-empty description or a
// type, in every module.
func checkVariables(c config) []string {
	var out []string
	for _, m := range sortedModules(c) {
		for _, b := range m.blocks("variable") {
			where := m.dir + "/" + b.where() + " " + b.name()
			a, ok := b.Body.Attributes["description"]
			if !ok {
				out = append(out, where+": no description")
			} else if s, ok := literalString(a.Expr); !ok || strings.TrimSpace(s) == "" {
				out = append(out, where+": description must be a non-empty string")
			}
			if _, ok := b.Body.Attributes["type"]; !ok {
				out = append(out, where+": no type")
			}
		}
	}
	return out
}

// checkOutputs reports outputs without a description, and a root module
// without a connect_string output of the form <address>:<rendezvous
// port>#<server peer ID>.
func checkOutputs(c config) []string {
	var out []string
	for _, m := range sortedModules(c) {
		for _, b := range m.blocks("output") {
			if a, ok := b.Body.Attributes["description"]; !ok {
				out = append(out, m.dir+"/"+b.where()+" "+b.name()+": no description")
			} else if s, ok := literalString(a.Expr); !ok || s == "" {
				out = append(out, m.dir+"/"+b.where()+" "+b.name()+": description must be a non-empty string")
			}
		}
	}
	root := c["."]
	bs := root.blocks("output", "connect_string")
	if len(bs) != 1 {
		return append(out, "root module: want one output \"connect_string\" (the peer's --server value)")
	}
	val, ok := bs[0].Body.Attributes["value"]
	if !ok {
		return append(out, bs[0].where()+": connect_string has no value")
	}
	// Evaluate it with stand-ins for what it refers to: it must come out as
	// address:3478#peer-id.
	const peerID = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	ports, err := evalLocals(root, cty.EmptyObjectVal, "ports")
	if err != nil {
		return append(out, "root module: "+err.Error())
	}
	locals := map[string]cty.Value{
		"ports":          ports.GetAttr("ports"),
		"anycast_ips":    cty.ListVal([]cty.Value{cty.StringVal("192.0.2.1"), cty.StringVal("192.0.2.2")}),
		"server_peer_id": cty.StringVal(peerID),
	}
	v, diags := val.Expr.Value(evalContext(map[string]cty.Value{"local": cty.ObjectVal(locals)}))
	if diags.HasErrors() {
		return append(out, bs[0].where()+": connect_string must be made of local.anycast_ips, local.ports and local.server_peer_id: "+diags.Error())
	}
	want := "192.0.2.1:3478#" + peerID
	if v.Type() != cty.String || v.AsString() != want {
		out = append(out, fmt.Sprintf("%s: connect_string evaluates to %#v, want %q (<anycast-ip>:3478#<server peer ID>)", bs[0].where(), v, want))
	}
	return out
}

// checkHealthChecks reports load balancer target groups and accelerator
// endpoint groups whose health check is not HTTP GET /healthz on the admin
// port, and a configuration that has neither.
func checkHealthChecks(c config) []string {
	var out []string
	var tgs, egs int
	for _, m := range sortedModules(c) {
		for _, b := range m.blocks("resource", "aws_lb_target_group") {
			tgs++
			where := m.dir + "/" + b.where() + " " + b.name()
			hcs := childBlocks(b.Block, "health_check")
			if len(hcs) != 1 {
				out = append(out, where+": want one health_check block")
				continue
			}
			out = append(out, checkHealthAttrs(where, hcs[0].Body.Attributes, "path", "protocol", "port", "var.admin_port")...)
		}
		for _, b := range m.blocks("resource", "aws_globalaccelerator_endpoint_group") {
			egs++
			where := m.dir + "/" + b.where() + " " + b.name()
			out = append(out, checkHealthAttrs(where, b.Body.Attributes, "health_check_path", "health_check_protocol", "health_check_port", "local.ports.admin")...)
		}
	}
	if tgs == 0 {
		out = append(out, "no aws_lb_target_group: the servers are not behind load balancers")
	}
	if egs == 0 {
		out = append(out, "no aws_globalaccelerator_endpoint_group: no region is behind the anycast addresses")
	}
	return out
}

func checkHealthAttrs(where string, attrs hclsyntax.Attributes, pathAttr, protoAttr, portAttr, portRef string) []string {
	var out []string
	if a, ok := attrs[pathAttr]; !ok {
		out = append(out, where+": no "+pathAttr)
	} else if s, _ := literalString(a.Expr); s != "/healthz" {
		out = append(out, where+": "+pathAttr+" must be \"/healthz\"")
	}
	if a, ok := attrs[protoAttr]; !ok {
		out = append(out, where+": no "+protoAttr)
	} else if s, _ := literalString(a.Expr); s != "HTTP" {
		out = append(out, where+": "+protoAttr+" must be \"HTTP\"")
	}
	if a, ok := attrs[portAttr]; !ok {
		out = append(out, where+": no "+portAttr)
	} else if !references(a.Expr, portRef) {
		out = append(out, where+": "+portAttr+" must be the admin port ("+portRef+")")
	}
	return out
}

// checkRegionModule reports a region module that does not run both servers:
// it must take rendezvous and relay inputs, gather them in local.services,
// and make its load balancers, launch templates and auto scaling groups for
// each entry of local.services.
func checkRegionModule(c config) []string {
	m := c[moduleDir]
	if m == nil {
		return []string{"no module in " + moduleDir}
	}
	var out []string
	for _, v := range []string{"rendezvous", "relay"} {
		bs := m.blocks("variable", v)
		if len(bs) != 1 {
			out = append(out, fmt.Sprintf("%s: want one variable %q", moduleDir, v))
			continue
		}
		if _, ok := bs[0].Body.Attributes["default"]; ok {
			out = append(out, fmt.Sprintf("%s: variable %q must be required (no default)", moduleDir, v))
		}
	}
	svc, ok := m.locals()["services"]
	if !ok {
		return append(out, moduleDir+": no local \"services\"")
	}
	keys, ok := objectKeys(svc.Expr)
	if !ok {
		return append(out, moduleDir+": local.services must be an object constructor")
	}
	for _, want := range []string{"rendezvous", "relay"} {
		e, ok := keys[want]
		if !ok {
			out = append(out, fmt.Sprintf("%s: local.services has no %q", moduleDir, want))
			continue
		}
		if ref, _ := traversalString(e); ref != "var."+want {
			out = append(out, fmt.Sprintf("%s: local.services.%s must be var.%s", moduleDir, want, want))
		}
	}
	for _, typ := range []string{"aws_lb", "aws_launch_template", "aws_autoscaling_group"} {
		bs := m.blocks("resource", typ)
		if len(bs) == 0 {
			out = append(out, fmt.Sprintf("%s: no %s", moduleDir, typ))
		}
		for _, b := range bs {
			fe, ok := b.Body.Attributes["for_each"]
			if ref, _ := traversalString(exprOrNil(fe, ok)); ref != "local.services" {
				out = append(out, fmt.Sprintf("%s/%s %s: for_each must be local.services (one per server)", moduleDir, b.where(), b.name()))
			}
		}
	}
	return out
}

func exprOrNil(a *hclsyntax.Attribute, ok bool) hclsyntax.Expression {
	if !ok {
		return nil
	}
	return a.Expr
}

// regionPool is a list of real region codes for building var.regions.
var regionPool = []string{"us-east-1", "eu-west-1", "ap-southeast-1", "us-west-2", "eu-central-1", "ap-northeast-1", "sa-east-1", "ca-central-1", "ap-south-1", "eu-north-1"}

// regionsValue builds a valid var.regions of n entries.
func regionsValue(n int) cty.Value {
	var rs []cty.Value
	for i := 0; i < n; i++ {
		rs = append(rs, cty.ObjectVal(map[string]cty.Value{
			"name":             cty.StringVal(regionPool[i]),
			"vpc_cidr":         cty.StringVal(fmt.Sprintf("10.%d.0.0/16", 10+i)),
			"rendezvous_count": cty.NumberIntVal(2),
			"relay_count":      cty.NumberIntVal(2),
		}))
	}
	if len(rs) == 0 {
		return cty.ListValEmpty(cty.Object(map[string]cty.Type{"name": cty.String, "vpc_cidr": cty.String, "rendezvous_count": cty.Number, "relay_count": cty.Number}))
	}
	return cty.ListVal(rs)
}

// checkRegionSlots reports a root module in which some accepted var.regions
// does not get exactly one region module per region, each with a provider
// for that region and both servers. It evaluates the validations of
// var.regions for 1 to len(regionPool) regions to learn which lengths are
// accepted (at least 3 must be required), then, for each accepted length,
// the count of every region module call and the region of the provider it
// is given.
func checkRegionSlots(c config) []string {
	root := c["."]
	var out []string
	vb := root.blocks("variable", "regions")
	if len(vb) != 1 {
		return []string{"root module: want one variable \"regions\""}
	}
	validations := childBlocks(vb[0].Block, "validation")
	accepts := func(n int) (bool, error) {
		ctx := evalContext(map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{"regions": regionsValue(n)})})
		for _, v := range validations {
			a, ok := v.Body.Attributes["condition"]
			if !ok {
				return false, fmt.Errorf("validation without condition at line %d", v.TypeRange.Start.Line)
			}
			val, diags := a.Expr.Value(ctx)
			if diags.HasErrors() {
				return false, fmt.Errorf("validation at line %d: %s", v.TypeRange.Start.Line, diags.Error())
			}
			if val.IsNull() || !val.IsKnown() || val.False() {
				return false, nil
			}
		}
		return true, nil
	}

	calls := root.blocks("module")
	var regionCalls []block
	for _, b := range calls {
		if s, _ := literalString(exprOrNil(b.Body.Attributes["source"], b.Body.Attributes["source"] != nil)); s == "./"+moduleDir {
			regionCalls = append(regionCalls, b)
		}
	}
	if len(regionCalls) == 0 {
		return []string{"root module: no module calls ./" + moduleDir}
	}
	providers := map[string]*hclsyntax.Block{} // "aws.alias" -> block
	for _, b := range root.blocks("provider", "aws") {
		alias := "aws"
		if a, ok := b.Body.Attributes["alias"]; ok {
			s, _ := literalString(a.Expr)
			alias = "aws." + s
		}
		providers[alias] = b.Block
	}

	accepted := 0
	for n := 1; n <= len(regionPool); n++ {
		ok, err := accepts(n)
		if err != nil {
			return append(out, "variable \"regions\": "+err.Error())
		}
		if !ok {
			continue
		}
		accepted++
		if n < 3 {
			out = append(out, fmt.Sprintf("variable \"regions\" accepts %d regions; at least 3 are required", n))
			continue
		}
		out = append(out, checkSlotsFor(root, regionCalls, providers, n)...)
	}
	if ok, _ := accepts(3); !ok {
		out = append(out, "variable \"regions\" refuses a valid list of 3 regions")
	}
	if accepted == 0 {
		out = append(out, "variable \"regions\" accepts no list at all")
	}
	return out
}

// checkSlotsFor checks the region module calls for var.regions of n
// entries.
func checkSlotsFor(root *tfModule, calls []block, providers map[string]*hclsyntax.Block, n int) []string {
	var out []string
	regions := regionsValue(n)
	vars := cty.ObjectVal(map[string]cty.Value{"regions": regions})
	localNames := []string{"primary_region"}
	if _, ok := root.locals()["slot_regions"]; ok {
		localNames = append(localNames, "slot_regions")
	}
	locals, err := evalLocals(root, vars, localNames...)
	if err != nil {
		return []string{err.Error()}
	}
	ctx := evalContext(map[string]cty.Value{"var": vars, "local": locals})
	seen := map[string]string{} // region -> module
	for _, b := range calls {
		name := "module." + b.Labels[0]
		count := int64(1)
		if a, ok := b.Body.Attributes["count"]; ok {
			v, diags := a.Expr.Value(ctx)
			if diags.HasErrors() || v.Type() != cty.Number {
				out = append(out, fmt.Sprintf("%s with %d regions: count: %s", name, n, diags.Error()))
				continue
			}
			count, _ = v.AsBigFloat().Int64()
		}
		if _, ok := b.Body.Attributes["for_each"]; ok {
			out = append(out, name+": region modules are called once per provider slot, not with for_each (a module's provider cannot vary per instance)")
			continue
		}
		if count == 0 {
			continue
		}
		if count != 1 {
			out = append(out, fmt.Sprintf("%s with %d regions: count is %d, want 0 or 1", name, n, count))
			continue
		}
		// The provider it gets, and that provider's region.
		pa, ok := b.Body.Attributes["providers"]
		if !ok {
			out = append(out, name+": no providers (each region module needs its region's provider)")
			continue
		}
		pm, ok := objectKeys(pa.Expr)
		if !ok {
			out = append(out, name+": providers must be an object")
			continue
		}
		ref, _ := traversalString(pm["aws"])
		pb, ok := providers[ref]
		if !ok {
			out = append(out, fmt.Sprintf("%s: providers.aws = %q is not a provider block of the root module", name, ref))
			continue
		}
		ra, ok := pb.Body.Attributes["region"]
		if !ok {
			out = append(out, fmt.Sprintf("provider %s has no region", ref))
			continue
		}
		rv, diags := ra.Expr.Value(ctx)
		if diags.HasErrors() || rv.Type() != cty.String {
			out = append(out, fmt.Sprintf("provider %s with %d regions: region: %s", ref, n, diags.Error()))
			continue
		}
		region := rv.AsString()
		if prev, dup := seen[region]; dup {
			out = append(out, fmt.Sprintf("with %d regions, %s and %s both run in %s", n, prev, name, region))
		}
		seen[region] = name
		// The module's own region and VPC must be that region's.
		if a, ok := b.Body.Attributes["region"]; ok {
			if v, d := a.Expr.Value(ctx); d.HasErrors() || v.Type() != cty.String || v.AsString() != region {
				out = append(out, fmt.Sprintf("%s with %d regions: region argument is not its provider's region %s", name, n, region))
			}
		} else {
			out = append(out, name+": no region argument")
		}
		if a, ok := b.Body.Attributes["vpc_cidr"]; ok {
			want := ""
			for i := 0; i < n; i++ {
				if r := regions.Index(cty.NumberIntVal(int64(i))); r.GetAttr("name").AsString() == region {
					want = r.GetAttr("vpc_cidr").AsString()
				}
			}
			if v, d := a.Expr.Value(ctx); d.HasErrors() || v.Type() != cty.String || v.AsString() != want {
				out = append(out, fmt.Sprintf("%s with %d regions: vpc_cidr argument is not the vpc_cidr of %s", name, n, region))
			}
		} else {
			out = append(out, name+": no vpc_cidr argument")
		}
		for _, arg := range []string{"rendezvous", "relay"} {
			if _, ok := b.Body.Attributes[arg]; !ok {
				out = append(out, fmt.Sprintf("%s: no %s argument: every region runs both servers", name, arg))
			}
		}
	}
	for i := 0; i < n; i++ {
		r := regions.Index(cty.NumberIntVal(int64(i))).GetAttr("name").AsString()
		if _, ok := seen[r]; !ok {
			out = append(out, fmt.Sprintf("with %d regions, no region module runs in %s (add provider and module slots)", n, r))
		}
	}
	for r, name := range seen {
		found := false
		for i := 0; i < n; i++ {
			if regions.Index(cty.NumberIntVal(int64(i))).GetAttr("name").AsString() == r {
				found = true
			}
		}
		if !found {
			out = append(out, fmt.Sprintf("with %d regions, %s runs in %s, which is not in var.regions", n, name, r))
		}
	}
	sort.Strings(out)
	return out
}

func sortedModules(c config) []*tfModule {
	var out []*tfModule
	for _, k := range sortedKeys(c) {
		out = append(out, c[k])
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func firstDiffLine(a, b []byte) int {
	line := 1
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return line
		}
		if a[i] == '\n' {
			line++
		}
	}
	return line
}
