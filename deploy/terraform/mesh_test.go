package terraform_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// meshSettings are the settings the instance mesh needs on each server in
// an auto-scaling group: without all of them a server has no mesh, and the
// peer secret is given to nobody (a secret no code uses says a feature is
// there that is not).
var meshSettings = map[string][]string{
	"rendezvous": {"KEYMESH_MESH_LISTEN", "KEYMESH_MESH_ADVERTISE", "KEYMESH_MESH_REGISTRY", "KEYMESH_PEER_SECRET_FILE"},
	"relay":      {"KEYMESH_MESH_LISTEN", "KEYMESH_MESH_ADVERTISE", "KEYMESH_MESH_REGISTRY", "KEYMESH_PEER_SECRET_FILE"},
}

// meshPorts are the servers' mesh ports (locals.tf).
var meshPorts = map[string]string{"rendezvous": "3490", "relay": "3491"}

// TestMeshWired is issue 11's deployment correctness for the instance
// mesh: each server gets every mesh setting and the peer-secret file (all
// or nothing; the old configuration gave the relays the secret with no
// mesh to use it), binds the mesh to its private address and advertises
// its public one on the same port (regions reach each other only at
// public addresses; AWS maps them 1:1), finds the others in the shared
// Redis it may read (the redis-auth secret), keeps no static instance
// number, peer list or private-range allow-list (across regions the
// sources are public addresses an auto-scaling group picks), and has the
// mesh port open on its instances. The README no longer says the mesh is
// not wired.
func TestMeshWired(t *testing.T) {
	services, _ := rootServices(t, nil)
	wired := false
	for it := services.ElementIterator(); it.Next(); {
		name, svc := it.Element()
		env := svc.GetAttr("env")
		var have, missing []string
		for _, k := range meshSettings[name.AsString()] {
			if env.Type().HasAttribute(k) {
				have = append(have, k)
			} else {
				missing = append(missing, k)
			}
		}
		secret, redisAuth := false, false
		for s := svc.GetAttr("secrets").ElementIterator(); s.Next(); {
			_, v := s.Element()
			secret = secret || v.AsString() == "peer-secret"
			redisAuth = redisAuth || v.AsString() == "redis-auth"
		}
		switch {
		case len(have) > 0 && len(missing) > 0:
			t.Errorf("%s: mesh half wired: sets %v but not %v", name.AsString(), have, missing)
		case secret != (len(have) > 0):
			t.Errorf("%s: peer-secret fetched = %v, mesh settings = %v: give the secret exactly to servers in the mesh", name.AsString(), secret, have)
		}
		if len(missing) > 0 {
			t.Errorf("%s: mesh not wired: lacks %v", name.AsString(), missing)
			continue
		}
		wired = true
		get := func(k string) string { return env.GetAttr(k).AsString() }
		port := meshPorts[name.AsString()]
		if got := get("KEYMESH_MESH_LISTEN"); got != "${PRIVATE_IP}:"+port {
			t.Errorf("%s: KEYMESH_MESH_LISTEN=%s: the mesh listens on the instance's private address, port %s", name.AsString(), got, port)
		}
		if got := get("KEYMESH_MESH_ADVERTISE"); got != "${PUBLIC_IP}:"+port {
			t.Errorf("%s: KEYMESH_MESH_ADVERTISE=%s: the mesh is advertised at the instance's public address, same port", name.AsString(), got)
		}
		if !strings.HasPrefix(get("KEYMESH_MESH_REGISTRY"), "rediss://:${REDIS_AUTH}@") || !redisAuth {
			t.Errorf("%s: KEYMESH_MESH_REGISTRY=%s, redis-auth fetched = %v: the membership is the shared Redis, over TLS with its password", name.AsString(), get("KEYMESH_MESH_REGISTRY"), redisAuth)
		}
		forbidden := []string{"KEYMESH_MESH_PEERS", "KEYMESH_MESH_ALLOW"}
		if name.AsString() == "relay" {
			forbidden = append(forbidden, "KEYMESH_INSTANCE") // the rendezvous' --instance is only a label
		}
		for _, k := range forbidden {
			if env.Type().HasAttribute(k) {
				t.Errorf("%s: sets %s: with --mesh-registry the membership numbers and lists the instances and is the mesh's source list", name.AsString(), k)
			}
		}
		open := false
		for d := svc.GetAttr("direct").ElementIterator(); d.Next(); {
			_, v := d.Element()
			from, _ := v.GetAttr("from").AsBigFloat().Int64()
			to, _ := v.GetAttr("to").AsBigFloat().Int64()
			open = open || v.GetAttr("protocol").AsString() == "udp" && fmt.Sprint(from) == port && fmt.Sprint(to) == port
		}
		if !open {
			t.Errorf("%s: UDP %s (the mesh) is not open on the instances", name.AsString(), port)
		}
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(readme), "is not wired here") || !wired {
		t.Errorf("the mesh is wired = %v; the README must not say it is not", wired)
	}
}

// TestEnvExamplesMeshWhole: each systemd environment example that mentions
// the peer secret shows every other mesh setting of its server beside it,
// so nobody sets the secret alone expecting a mesh (the relay's example
// once said the secret forwarded stream traffic, which no code does).
func TestEnvExamplesMeshWhole(t *testing.T) {
	for name, keys := range meshSettings {
		b, err := os.ReadFile("../systemd/keymesh-" + name + ".env.example")
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if !strings.Contains(text, "KEYMESH_PEER_SECRET_FILE") {
			continue
		}
		for _, k := range keys {
			if !strings.Contains(text, "#"+k+"=") {
				t.Errorf("keymesh-%s.env.example names the peer secret but not %s", name, k)
			}
		}
		if strings.Contains(strings.ToLower(text), "forward stream") {
			t.Errorf("keymesh-%s.env.example says stream traffic is forwarded between instances; no code does", name)
		}
	}
}
