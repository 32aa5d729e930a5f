package terraform_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"

	"github.com/keymesh/keymesh/internal/crypto"
)

// rootScope is what the root module's locals need besides themselves, with
// stand-ins for resource attributes: every variable at its default (three
// regions), the accelerator's addresses and the Redis endpoint.
func rootScope(t *testing.T, root *tfModule, overrides map[string]cty.Value) map[string]cty.Value {
	t.Helper()
	vars := map[string]cty.Value{}
	for _, b := range root.blocks("variable") {
		if d, ok := b.Body.Attributes["default"]; ok {
			v, diags := d.Expr.Value(nil)
			if diags.HasErrors() {
				t.Fatalf("%s default: %s", b.name(), diags.Error())
			}
			vars[b.Labels[0]] = v
		}
	}
	vars["regions"] = regionsValue(3)
	for k, v := range overrides {
		vars[k] = v
	}
	return map[string]cty.Value{
		"tls_private_key": testKeys(sshPublicKey(testServerKey), sshPublicKey(testRelayKey)),
		"var":             cty.ObjectVal(vars),
		"path":            cty.ObjectVal(map[string]cty.Value{"module": cty.StringVal(root.dir)}),
		"aws_globalaccelerator_accelerator": cty.ObjectVal(map[string]cty.Value{
			"this": cty.ObjectVal(map[string]cty.Value{
				"ip_sets": cty.ListVal([]cty.Value{cty.ObjectVal(map[string]cty.Value{
					"ip_addresses": cty.ListVal([]cty.Value{cty.StringVal("192.0.2.10"), cty.StringVal("198.51.100.10")}),
				})}),
			}),
		}),
		"aws_elasticache_replication_group": cty.ObjectVal(map[string]cty.Value{
			"registry": cty.ObjectVal(map[string]cty.Value{
				"primary_endpoint_address": cty.StringVal("master.registry.example.cache.amazonaws.com"),
				"port":                     cty.NumberIntVal(6379),
			}),
		}),
	}
}

// Keys standing in for the rendezvous's and the relays' in rootScope.
var (
	testServerKey = ed25519.PublicKey(bytesOf(0x11, 32))
	testRelayKey  = ed25519.PublicKey(bytesOf(0x22, 32))
)

func peerIDOf(k ed25519.PublicKey) string {
	id, _ := crypto.PeerIDFromKey(k)
	return id.String()
}

// fileFunc is Terraform's file(path), relative to the working directory
// (the root module's folder when tests run).
var fileFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "path", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		b, err := os.ReadFile(args[0].AsString())
		if err != nil {
			return cty.NilVal, err
		}
		return cty.StringVal(string(b)), nil
	},
})

// rootServices evaluates the root module's local.services and
// local.listeners with the stand-ins of rootScope.
func rootServices(t *testing.T, overrides map[string]cty.Value) (services, listeners cty.Value) {
	t.Helper()
	root := loadConfig(t, ".")["."]
	scope := rootScope(t, root, overrides)
	all := root.locals()
	locals := map[string]cty.Value{}
	funcs := tfFuncs()
	funcs["file"] = fileFunc
	funcs["flatten"] = stdlib.FlattenFunc
	names := append(append([]string{}, peerIDLocals...), "primary_region", "ports", "secret_dir", "admin_listen", "anycast_ips", "public_host", "stream_relay_url", "acme_env", "redis_url", "mesh_env", "services", "listeners")
	for _, n := range names {
		a, ok := all[n]
		if !ok {
			t.Fatalf("no local %q", n)
		}
		vars := map[string]cty.Value{"local": cty.ObjectVal(locals)}
		for k, v := range scope {
			vars[k] = v
		}
		v, diags := a.Expr.Value(&hcl.EvalContext{Variables: vars, Functions: funcs})
		if diags.HasErrors() {
			t.Fatalf("local.%s: %s", n, diags.Error())
		}
		locals[n] = v
	}
	return locals["services"], locals["listeners"]
}

// renderUserData renders the region module's user_data template for one
// service as Terraform would.
func renderUserData(t *testing.T, service string, svc cty.Value) string {
	t.Helper()
	path := filepath.Join(moduleDir, "templates", "user_data.sh.tftpl")
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	expr, diags := hclsyntax.ParseTemplate(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("parse %s: %s", path, diags.Error())
	}
	vars := map[string]cty.Value{
		"service":          cty.StringVal(service),
		"goarch":           cty.StringVal("arm64"),
		"region":           cty.StringVal("eu-west-1"),
		"secret_prefix":    cty.StringVal("keymesh"),
		"secrets":          svc.GetAttr("secrets"),
		"secrets_revision": cty.StringVal("rev1"),
		"env":              svc.GetAttr("env"),
		"unit":             svc.GetAttr("unit"),
		"release": cty.ObjectVal(map[string]cty.Value{
			"bucket":   cty.StringVal("keymesh-release-x"),
			"region":   cty.StringVal("us-east-1"),
			"prefix":   cty.StringVal("releases/v1.0.0"),
			"version":  cty.StringVal("v1.0.0"),
			"revision": cty.StringVal("abc"),
		}),
	}
	v, diags := expr.Value(&hcl.EvalContext{Variables: vars, Functions: tfFuncs()})
	if diags.HasErrors() {
		t.Fatalf("render %s: %s", path, diags.Error())
	}
	return v.AsString()
}

func runBash(t *testing.T, script string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	return string(out)
}

// TestUserDataRenders renders the boot script of both servers, checks bash
// accepts it, that it carries the unit and every secret, and that the
// environment file it writes expands the boot-time values.
func TestUserDataRenders(t *testing.T) {
	services, _ := rootServices(t, nil)
	for _, name := range []string{"rendezvous", "relay"} {
		t.Run(name, func(t *testing.T) {
			svc := services.GetAttr(name)
			script := renderUserData(t, name, svc)
			if len(script) > 16<<10 {
				t.Errorf("user_data is %d bytes; EC2 takes at most 16 KiB", len(script))
			}
			f := filepath.Join(t.TempDir(), "user_data.sh")
			if err := os.WriteFile(f, []byte(script), 0o600); err != nil {
				t.Fatal(err)
			}
			runBash(t, "bash -n "+f)
			if !strings.Contains(script, svc.GetAttr("unit").AsString()) {
				t.Error("user_data does not carry the systemd unit verbatim")
			}
			for it := svc.GetAttr("secrets").ElementIterator(); it.Next(); {
				_, s := it.Element()
				if !strings.Contains(script, "--secret-id \"keymesh/"+s.AsString()+"\"") || !strings.Contains(script, "/etc/keymesh/secrets/"+s.AsString()) {
					t.Errorf("user_data does not fetch secret %s", s.AsString())
				}
			}
			// The environment file's here-document, run with the values
			// the boot script sets.
			start := strings.Index(script, "cat >/etc/keymesh/"+name+".env <<ENV\n")
			end := strings.Index(script, "\nENV\n")
			if start < 0 || end < start {
				t.Fatal("no environment file here-document in user_data")
			}
			heredoc := strings.Replace(script[start:end+5], "cat >/etc/keymesh/"+name+".env", "cat", 1)
			got := runBash(t, heredoc, "PUBLIC_IP=203.0.113.7", "PRIVATE_IP=10.0.1.23", "NPROC=2", "REDIS_AUTH=s3cret")
			for _, want := range map[string][]string{
				"rendezvous": {"KEYMESH_LISTEN=:3478\n", "KEYMESH_REUSEPORT=2\n", "KEYMESH_REGISTRY=redis\n", "KEYMESH_PUBLIC_ADDR=192.0.2.10\n", "KEYMESH_STREAM_RELAY=wss://192.0.2.10:443/v1/tunnel#" + peerIDOf(testRelayKey) + "\n", "KEYMESH_REDIS=rediss://:s3cret@master.registry.example.cache.amazonaws.com:6379/0\n", "KEYMESH_RELAY=192.0.2.10:3479,198.51.100.10:3479\n", "KEYMESH_JOIN_TOKEN_FILE=/etc/keymesh/secrets/join-token\n", "KEYMESH_ADMIN=10.0.1.23:9090\n",
					"KEYMESH_MESH_LISTEN=10.0.1.23:3490\n", "KEYMESH_MESH_ADVERTISE=203.0.113.7:3490\n", "KEYMESH_MESH_REGISTRY=rediss://:s3cret@master.registry.example.cache.amazonaws.com:6379/0\n", "KEYMESH_PEER_SECRET_FILE=/etc/keymesh/secrets/peer-secret\n"},
				"relay": {"KEYMESH_LISTEN=:3479\n", "KEYMESH_TLS_LISTEN=:443\n", "KEYMESH_TURN_RELAY_IP=0.0.0.0\n", "KEYMESH_TURN_ADVERTISE_IP=203.0.113.7\n", "KEYMESH_TURN_LISTEN=:3480\n", "KEYMESH_ADMIN=10.0.1.23:9090\n", "KEYMESH_STREAM_PRESENCE_IP=0.0.0.0\n", "KEYMESH_STREAM_ADVERTISE_IP=203.0.113.7\n",
					"KEYMESH_MESH_LISTEN=10.0.1.23:3491\n", "KEYMESH_MESH_ADVERTISE=203.0.113.7:3491\n", "KEYMESH_MESH_REGISTRY=rediss://:s3cret@master.registry.example.cache.amazonaws.com:6379/0\n", "KEYMESH_PEER_SECRET_FILE=/etc/keymesh/secrets/peer-secret\n"},
			}[name] {
				if !strings.Contains(got, want) {
					t.Errorf("environment file lacks %q; it is:\n%s", want, got)
				}
			}
			if strings.Contains(got, "$") {
				t.Errorf("environment file keeps an unexpanded $:\n%s", got)
			}
		})
	}
}

// TestListenersFollowPorts checks the accelerator listeners derived from
// the services' ports: each service's UDP and TCP ports, TCP_UDP in both.
func TestListenersFollowPorts(t *testing.T) {
	_, listeners := rootServices(t, nil)
	got := map[string]string{}
	for it := listeners.ElementIterator(); it.Next(); {
		k, l := it.Element()
		var ports []string
		for pi := l.GetAttr("ports").ElementIterator(); pi.Next(); {
			_, p := pi.Element()
			ports = append(ports, p.AsBigFloat().String())
		}
		sort.Strings(ports)
		got[k.AsString()] = fmt.Sprintf("%s %s %v", l.GetAttr("service").AsString(), l.GetAttr("protocol").AsString(), ports)
	}
	want := map[string]string{
		"rendezvous-udp": "rendezvous UDP [3478]",
		"relay-udp":      "relay UDP [3479 3480]",
		"relay-tcp":      "relay TCP [3480 443]",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("listeners = %v, want %v", got, want)
	}
}

// TestACMESettingsOnlyWhenSet checks that ACME flags reach the relay only
// when acme_domain is set.
func TestACMESettingsOnlyWhenSet(t *testing.T) {
	services, _ := rootServices(t, nil)
	if services.GetAttr("relay").GetAttr("env").Type().HasAttribute("KEYMESH_ACME_DOMAIN") {
		t.Error("KEYMESH_ACME_DOMAIN set without acme_domain")
	}
	services, _ = rootServices(t, map[string]cty.Value{
		"acme_domain": cty.StringVal("relay.example.com"),
		"acme_email":  cty.StringVal("ops@example.com"),
	})
	env := services.GetAttr("relay").GetAttr("env")
	if !env.Type().HasAttribute("KEYMESH_ACME_DOMAIN") || env.GetAttr("KEYMESH_ACME_DOMAIN").AsString() != "relay.example.com" {
		t.Errorf("relay env lacks KEYMESH_ACME_DOMAIN=relay.example.com: %#v", env)
	}
	if !env.Type().HasAttribute("KEYMESH_ACME_EMAIL") || env.Type().HasAttribute("KEYMESH_ACME_CA") {
		t.Errorf("relay env: want KEYMESH_ACME_EMAIL and no KEYMESH_ACME_CA: %#v", env)
	}
	rv := services.GetAttr("rendezvous").GetAttr("env")
	for k, want := range map[string]string{
		"KEYMESH_TURN_URI":     "turn:relay.example.com:3480",
		"KEYMESH_PUBLIC_ADDR":  "relay.example.com",
		"KEYMESH_STREAM_RELAY": "wss://relay.example.com:443/v1/tunnel", // no pin: ACME certificate
	} {
		if got := rv.GetAttr(k).AsString(); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}
