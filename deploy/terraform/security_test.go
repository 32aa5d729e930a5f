package terraform_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

// adminHost is the host KEYMESH_ADMIN listens on once the boot script set
// its values, and whether that is the private address or loopback.
func adminPrivate(t *testing.T, env cty.Value) (string, bool) {
	t.Helper()
	if !env.Type().HasAttribute("KEYMESH_ADMIN") {
		return "", true // no admin endpoint at all
	}
	v := env.GetAttr("KEYMESH_ADMIN").AsString()
	host := v[:strings.LastIndex(v, ":")]
	if host == "${PRIVATE_IP}" {
		return v, true
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return v, err == nil && a.IsLoopback()
}

// TestAdminNotPublic is issue 10's item 11: the unauthenticated admin
// endpoint listens on the instance's private address (what the load
// balancers' health checks reach) or loopback, never 0.0.0.0 or the public
// address; and the boot script sets PRIVATE_IP from the instance metadata.
func TestAdminNotPublic(t *testing.T) {
	services, _ := rootServices(t, nil)
	for it := services.ElementIterator(); it.Next(); {
		name, svc := it.Element()
		if v, ok := adminPrivate(t, svc.GetAttr("env")); !ok {
			t.Errorf("%s: KEYMESH_ADMIN=%s: the admin endpoint has no authentication; listen on ${PRIVATE_IP} or loopback", name.AsString(), v)
		}
	}
	tpl, err := os.ReadFile(filepath.Join(moduleDir, "templates", "user_data.sh.tftpl"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(tpl), "PRIVATE_IP=$(curl -fsS -H \"X-aws-ec2-metadata-token: $TOKEN\" http://169.254.169.254/latest/meta-data/local-ipv4)") {
		t.Error("the boot script does not set PRIVATE_IP from the instance metadata (local-ipv4)")
	}
}

// TestJoinTokenRequiredByDefault: by default the rendezvous requires the
// join token (its secret is fetched and --join-token-file set), and
// require_join_token = false turns that off.
func TestJoinTokenRequiredByDefault(t *testing.T) {
	has := func(services cty.Value) (env, secret bool) {
		rv := services.GetAttr("rendezvous")
		e := rv.GetAttr("env")
		env = e.Type().HasAttribute("KEYMESH_JOIN_TOKEN_FILE") && e.GetAttr("KEYMESH_JOIN_TOKEN_FILE").AsString() == "/etc/keymesh/secrets/join-token"
		for it := rv.GetAttr("secrets").ElementIterator(); it.Next(); {
			_, s := it.Element()
			secret = secret || s.AsString() == "join-token"
		}
		return env, secret
	}
	services, _ := rootServices(t, nil)
	if env, secret := has(services); !env || !secret {
		t.Errorf("by default: KEYMESH_JOIN_TOKEN_FILE set %v, join-token secret fetched %v; want both", env, secret)
	}
	services, _ = rootServices(t, map[string]cty.Value{"require_join_token": cty.False})
	if env, secret := has(services); env || secret {
		t.Errorf("require_join_token = false: KEYMESH_JOIN_TOKEN_FILE set %v, join-token secret fetched %v; want neither", env, secret)
	}
	// The token is made, kept as a secret and given to the operator.
	root := loadConfig(t, ".")["."]
	var made, output bool
	for _, b := range root.blocks("resource") {
		made = made || (len(b.Labels) == 2 && b.Labels[0] == "random_bytes" && b.Labels[1] == "join_token")
	}
	for _, b := range root.blocks("output") {
		output = output || b.Labels[0] == "join_token"
	}
	secrets, err := os.ReadFile("secrets.tf")
	if err != nil {
		t.Fatal(err)
	}
	if !made || !output || !strings.Contains(string(secrets), `"join-token"    = "${random_bytes.join_token.base64}\n"`) {
		t.Errorf("join token: resource random_bytes.join_token %v, output join_token %v, in secret_values %v", made, output, strings.Contains(string(secrets), `"join-token"`))
	}
}
