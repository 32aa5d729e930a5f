package rendezvouscmd

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/rzclient"

	"github.com/keymesh/keymesh/internal/testutil/syncbuf"
)

// syncBuf is syncbuf.Buffer.
type syncBuf = syncbuf.Buffer

func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--bogus"},
		{"--registry", "etcd"},
		{"--registry", "redis"},
		{"--redis", "redis://x"},
		{"--ttl", "10s", "--refresh", "20s"},
		{"--reuseport", "0"},
		{"--log-level", "loud"},
		{"--log-format", "xml"},
		{"--turn-uri", "turn:x:3478"},
		{"--rate-limit", "0"},
		{"--stun-rate", "0"},
		{"--key-miss-budget", "0"},
		{"--register-rate", "0"},
		{"--stun-burst", "0"},
		{"--max-records", "0"},
		{"--stream-relay-sources", "relay.example"},
		{"--stream-relay-factor", "0"},
		{"--mesh-listen", "127.0.0.1:3490", "--registry", "redis", "--redis", "redis://x"},
		{"--mesh-listen", "127.0.0.1:3490", "--peer-secret-file", "s"},
		{"--mesh-listen", "0.0.0.0:3490", "--peer-secret-file", "s", "--registry", "redis", "--redis", "redis://x"},
		{"--mesh-allow", "10.0.0.0/8"},
		{"--mesh-advertise", "203.0.113.7:3490"},
		{"--mesh-registry", "redis://x"},
		{"--mesh-listen", "127.0.0.1:3490", "--peer-secret-file", "s", "--registry", "redis", "--redis", "redis://x", "--mesh-advertise", "0.0.0.0:3490"},
		{"--mesh-listen", "127.0.0.1:3490", "--peer-secret-file", "s", "--registry", "redis", "--redis", "redis://x", "--mesh-registry", "http://x"},
		{"--mesh-listen", "127.0.0.1:3490", "--peer-secret-file", "s", "--registry", "redis", "--redis", "redis://x", "--mesh-allow", "nope"},
		{"--report-rate", "0"},
		{"--report-burst", "0"},
		{"extra"},
	} {
		var stderr bytes.Buffer
		code := Main(context.Background(), append(args, "--key", filepath.Join(t.TempDir(), "k")), &bytes.Buffer{}, &stderr)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if s := strings.TrimSpace(stderr.String()); s == "" || strings.Contains(s, "\n") {
			t.Errorf("%v: stderr %q, want one line", args, s)
		}
	}
}

func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("0123456789abcdef0123456789abcdef"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--key", open},
		{"--key", filepath.Join(dir, "k1"), "--cookie-secret-file", open},
		{"--key", filepath.Join(dir, "k2"), "--cookie-secret-file", filepath.Join(dir, "missing")},
	} {
		var stderr bytes.Buffer
		code := Main(context.Background(), append(args, "--listen", "127.0.0.1:0", "--admin", ""), &bytes.Buffer{}, &stderr)
		if code != 2 || strings.Count(strings.TrimSpace(lastLine(stderr.String())), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr.String())
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func TestEnv(t *testing.T) {
	env := map[string]string{"KEYMESH_TTL": "120s", "KEYMESH_RELAY": "a:1, b:2", "KEYMESH_LISTEN": "127.0.0.1:5000"}
	o, err := ParseFlags([]string{"--listen", "127.0.0.1:6000"}, &bytes.Buffer{}, func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.TTL != 120*time.Second || len(o.Relays) != 2 || o.Relays[1] != "b:2" || o.Listen != "127.0.0.1:6000" {
		t.Fatalf("options %+v", o)
	}
}

// TestRunCommand runs the command on loopback with two SO_REUSEPORT sockets,
// registers a peer through the printed connect string, scrapes the admin
// endpoint and shuts down cleanly.
func TestRunCommand(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "server.key")
	secret := filepath.Join(dir, "cookie")
	if err := os.WriteFile(secret, []byte("00112233445566778899aabbccddeeff"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuf
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--key", key,
			"--cookie-secret-file", secret, "--reuseport", "2", "--relay", "127.0.0.1:9", "--instance", "cmdtest"}, &stdout, &stderr)
	}()
	re := regexp.MustCompile(`connect string: (\S+)\n(?s:.*)admin: (http://\S+)\n`)
	var m []string
	deadline := time.Now().Add(5 * time.Second)
	for m = re.FindStringSubmatch(stdout.String()); m == nil; m = re.FindStringSubmatch(stdout.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no connect string; stdout %q stderr %q", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, err := os.Stat(key)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st.Mode(), err)
	}
	server, serverKey, err := rzclient.ParseServer(m[1])
	if err != nil {
		t.Fatal(err)
	}
	id, _ := crypto.GenerateIdentity(nil)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := rzclient.New(rzclient.Config{Identity: id, Server: server, ServerKey: serverKey, AllowAny: true,
		Retransmit: 100 * time.Millisecond,
		Send: func(b []byte, to netip.AddrPort) error {
			_, err := conn.WriteToUDPAddrPort(b, to)
			return err
		}})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.HandleFrame(buf[:n], from)
		}
	}()
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	go c.Run(cctx)
	for !c.Status().Registered {
		if time.Now().After(deadline) {
			t.Fatalf("not registered: %q", c.Status().LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := c.Status(); s.Instance != "cmdtest" || len(s.Relays) != 1 {
		t.Fatalf("status %+v", s)
	}
	resp, err := http.Get(m[2])
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(body.String(), "keymesh_rendezvous_registrations_total 1") {
		t.Fatalf("metrics lack the registration:\n%s", body.String())
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d; stderr %q", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no clean shutdown within 5 s")
	}
	// The key is kept: a second run prints the same key.
	id2, err := crypto.LoadKeyFile(key)
	if err != nil || id2.ID() != serverKey {
		t.Fatalf("reloaded key %v, %v", id2, err)
	}
}
