package relaycmd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/relayclient"
	"github.com/keymesh/keymesh/internal/testutil/metricstest"
	"github.com/keymesh/keymesh/internal/turnrelay"
	"github.com/keymesh/keymesh/internal/wire"
)

func noEnv(string) (string, bool) { return "", false }

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestBadInvocationsExit2WithOneLine(t *testing.T) {
	dir := t.TempDir()
	exposed := filepath.Join(dir, "exposed.keys")
	os.WriteFile(exposed, []byte(crypto.NewTicketKeyLine(1)), 0o644)
	keys := filepath.Join(dir, "ticket.keys")
	os.WriteFile(keys, []byte(crypto.NewTicketKeyLine(1)), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, nil, "flag provided but not defined"},
		{"bad duration", []string{"--ticket-ttl", "soon"}, nil, "ticket-ttl"},
		{"short ttl", []string{"--dev", "--ticket-ttl", "10ms"}, nil, "at least 1s"},
		{"no sockets", []string{"--dev", "--reuseport", "0"}, nil, "--reuseport 0"},
		{"stray argument", []string{"--dev", "serve"}, nil, "unexpected argument"},
		{"bad log level", []string{"--dev", "--log-level", "loud"}, nil, "log level"},
		{"no key", []string{"--listen", "127.0.0.1:0"}, nil, "relay --gen-ticket-key > /etc/keymesh/ticket.keys"},
		{"missing key file", []string{"--ticket-key-file", filepath.Join(dir, "nope")}, nil, "no such file"},
		{"exposed key file", []string{"--ticket-key-file", exposed}, nil, "chmod 600"},
		{"dev and file", []string{"--dev", "--ticket-key-file", exposed}, nil, "drop one"},
		{"turn without secret", []string{"--dev", "--turn-listen", "127.0.0.1:0"}, nil, "--turn-secret-file"},
		{"bad relay ip", []string{"--dev", "--turn-relay-ip", "example"}, nil, "not an IP"},
		{"bad advertise ip", []string{"--dev", "--turn-advertise-ip", "0.0.0.0"}, nil, "--turn-advertise-ip"},
		{"bad allowed range", []string{"--dev", "--allow-destinations", "10.0.0.0/8,nope"}, nil, "--allow-destinations"},
		{"bad env", nil, map[string]string{"KEYMESH_TICKET_TTL": "soon"}, "KEYMESH_TICKET_TTL"},
		{"key id", []string{"--gen-ticket-key", "--ticket-key-id", "300"}, nil, "0 to 255"},
		{"instance range", []string{"--dev", "--instance", "70000"}, nil, "1 to 65535"},
		{"mesh without instance", []string{"--dev", "--mesh-listen", "127.0.0.1:3490"}, nil, "--mesh-listen needs --instance"},
		{"mesh without secret", []string{"--dev", "--instance", "1", "--mesh-listen", "127.0.0.1:3490", "--mesh-peers", "2=127.0.0.2:3490"}, nil, "--peer-secret-file"},
		{"mesh without peers", []string{"--dev", "--instance", "1", "--mesh-listen", "127.0.0.1:3490", "--peer-secret-file", exposed}, nil, "--mesh-peers"},
		{"peers without mesh", []string{"--dev", "--mesh-peers", "2=127.0.0.2:3490"}, nil, "--mesh-peers needs --mesh-listen"},
		{"bad peers", []string{"--dev", "--instance", "1", "--mesh-listen", "127.0.0.1:3490", "--mesh-peers", "two=127.0.0.2:3490", "--peer-secret-file", exposed}, nil, "1 to 65535"},
		{"wildcard mesh", []string{"--dev", "--instance", "1", "--mesh-listen", "0.0.0.0:3490", "--mesh-peers", "2=127.0.0.2:3490", "--peer-secret-file", exposed}, nil, "own private ip:port"},
		{"registry with instance", []string{"--dev", "--instance", "1", "--mesh-listen", "127.0.0.1:3490", "--mesh-registry", "redis://127.0.0.1:6379/0", "--peer-secret-file", exposed}, nil, "drop --instance and --mesh-peers"},
		{"registry without mesh", []string{"--dev", "--mesh-registry", "redis://127.0.0.1:6379/0"}, nil, "--mesh-registry needs --mesh-listen"},
		{"bad registry", []string{"--dev", "--mesh-listen", "127.0.0.1:3490", "--mesh-registry", "http://x", "--peer-secret-file", exposed}, nil, "--mesh-registry"},
		{"advertise without mesh", []string{"--dev", "--mesh-advertise", "203.0.113.7:3490"}, nil, "--mesh-advertise needs --mesh-listen"},
		{"wildcard advertise", []string{"--dev", "--instance", "1", "--mesh-listen", "127.0.0.1:3490", "--mesh-advertise", "0.0.0.0:3490", "--mesh-peers", "2=127.0.0.2:3490", "--peer-secret-file", exposed}, nil, "--mesh-advertise"},
		{"peers disagree with advertise", []string{"--dev", "--instance", "1", "--mesh-listen", "127.0.0.1:3490", "--mesh-advertise", "203.0.113.7:3490", "--mesh-peers", "1=127.0.0.1:3490,2=127.0.0.2:3490", "--peer-secret-file", exposed}, nil, "make them agree"},
		{"exposed peer secret", []string{"--ticket-key-file", keys, "--admin", "", "--listen", "127.0.0.1:0", "--instance", "1", "--mesh-listen", "127.0.0.1:3490", "--mesh-peers", "2=127.0.0.2:3490", "--peer-secret-file", exposed}, nil, "chmod 600"},
		{"zero bind budget", []string{"--dev", "--binds-per-second", "0"}, nil, "negative one for no cap"},
		{"zero bind rate", []string{"--dev", "--bind-rate", "0"}, nil, "--bind-rate 0"},
		{"zero challenge burst", []string{"--dev", "--challenge-burst", "0"}, nil, "--challenge-burst 0"},
		{"no sources", []string{"--dev", "--rate-limit-sources", "0"}, nil, "--rate-limit-sources 0"},
		{"zero mesh unverified rate", []string{"--dev", "--mesh-unverified-rate", "0"}, nil, "--mesh-unverified-rate 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			code := MainEnv(ctx, tc.args, envOf(tc.env), &out, &errb)
			if code != 2 {
				t.Fatalf("exit %d, want 2 (stderr %q)", code, errb.String())
			}
			msg := errb.String()
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "relay: ") {
				t.Fatalf("want one line starting `relay: `, got %q", msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("message %q does not mention %q", msg, tc.want)
			}
		})
	}
}

func TestTURNDeploymentFlags(t *testing.T) {
	c, err := parse([]string{"--dev", "--turn-relay-ip", "0.0.0.0", "--turn-advertise-ip", "203.0.113.4",
		"--allow-destinations", "10.1.0.0/16, 192.0.2.7", "--turn-max-allocations", "500", "--turn-allocation-rate", "-1"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tu := c.opts.TURN
	if tu.RelayIP.String() != "0.0.0.0" || tu.AdvertiseIP.String() != "203.0.113.4" || tu.MaxAllocations != 500 || tu.AllocationRate != -1 {
		t.Fatalf("TURN options %+v", tu)
	}
	if got := fmt.Sprint(c.opts.AllowDestinations); got != "[10.1.0.0/16 192.0.2.7/32]" {
		t.Fatalf("AllowDestinations %s", got)
	}
	c, err = parse([]string{"--dev"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.opts.AllowDestinations != nil || c.opts.TURN.MaxAllocations != turnrelay.DefaultMaxAllocations ||
		c.opts.TURN.ChallengeRate != turnrelay.DefaultChallengeRate || c.opts.TURN.BindingRate != turnrelay.DefaultBindingRate {
		t.Fatalf("defaults %+v", c.opts)
	}
}

func TestGenTicketKeyAndVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := MainEnv(context.Background(), []string{"--gen-ticket-key", "--ticket-key-id", "7"}, noEnv, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	line := out.String()
	if !strings.HasPrefix(line, "7 ") || strings.Count(line, "\n") != 1 {
		t.Fatalf("key line %q", line)
	}
	if _, err := crypto.ParseTicketKeys(out.Bytes(), nil); err != nil {
		t.Fatalf("printed key does not parse: %v", err)
	}
	out.Reset()
	MainEnv(context.Background(), []string{"--gen-ticket-key"}, noEnv, &out, &errb)
	if out.String() == line || !strings.HasPrefix(out.String(), "1 ") {
		t.Fatalf("second key %q: want a fresh key with id 1", out.String())
	}
	out.Reset()
	if code := MainEnv(context.Background(), []string{"--version"}, noEnv, &out, &errb); code != 0 || strings.TrimSpace(out.String()) == "" {
		t.Fatalf("--version: exit %d, %q", code, out.String())
	}
	out.Reset()
	if code := MainEnv(context.Background(), []string{"--help"}, noEnv, &out, &errb); code != 0 || !strings.Contains(out.String(), "KEYMESH_TICKET_KEY_FILE") {
		t.Fatalf("--help: exit %d, %q", code, out.String())
	}
}

// running is a relay started by Run in this process.
type running struct {
	addrs Addrs
	done  chan error
}

func startRun(t *testing.T, args []string, env map[string]string) *running {
	t.Helper()
	c, err := parse(args, envOf(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan Addrs, 1)
	c.opts.Ready = func(a Addrs) { ready <- a }
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{done: make(chan error, 1)}
	go func() { r.done <- Run(ctx, c.opts, io.Discard, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run returned %v after cancel", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	select {
	case r.addrs = <-ready:
	case err := <-r.done:
		t.Fatalf("Run failed: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("relay not ready")
	}
	return r
}

func udpPeer(t *testing.T) (*net.UDPConn, *crypto.Identity) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, id
}

// forwardOnce binds b to the relay and sends one packet from a to b
// through it.
func forwardOnce(t *testing.T, relayAddr net.Addr, ticket []byte) {
	t.Helper()
	a, aid := udpPeer(t)
	b, bid := udpPeer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	bb, err := relayclient.Bind(ctx, b, relayAddr, bid)
	if err != nil {
		t.Fatal(err)
	}
	if ticket == nil {
		ticket = bb.Ticket
	}
	if _, err := a.WriteTo(wire.AppendRelaySend(nil, ticket, aid.ID().Tag(), []byte("through the relay")), relayAddr); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := b.ReadFrom(buf)
	if err != nil {
		t.Fatalf("nothing forwarded: %v", err)
	}
	tag, payload, err := wire.ParseData(buf[:n])
	if err != nil || tag != aid.ID().Tag() || string(payload) != "through the relay" {
		t.Fatalf("forwarded %q (tag %x, %v)", payload, tag, err)
	}
}

func metricValue(t *testing.T, body, name string) float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	mf, ok := mfs[name]
	if !ok || len(mf.GetMetric()) == 0 {
		t.Fatalf("metric %s missing", name)
	}
	m := mf.GetMetric()[0]
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func TestRunServesRelayAndAdmin(t *testing.T) {
	r := startRun(t, []string{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--reuseport", "2"},
		map[string]string{"KEYMESH_DEV": "true"})
	forwardOnce(t, r.addrs.UDP, nil)
	base := "http://" + r.addrs.Admin.String()
	if code, body := metricstest.Get(t, base+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	_, body := metricstest.Get(t, base+"/metrics")
	if v := metricValue(t, body, "keymesh_relay_serving_sockets"); v != 2 {
		t.Fatalf("serving sockets %v, want 2", v)
	}
	deadline := time.Now().Add(2 * time.Second)
	for metricValue(t, body, "keymesh_relay_forwarded_packets_total") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("forwarded packet not counted")
		}
		time.Sleep(10 * time.Millisecond)
		_, body = metricstest.Get(t, base+"/metrics")
	}
}

func TestRunWithKeyFileAndTURN(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "ticket.keys")
	if err := os.WriteFile(keyFile, []byte(crypto.NewTicketKeyLine(3)), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := "turn-test-secret-0123456789"
	secretFile := filepath.Join(dir, "turn.secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRun(t, []string{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--ticket-key-file", keyFile,
		"--turn-listen", "127.0.0.1:0", "--turn-tcp-listen", "127.0.0.1:0", "--turn-secret-file", secretFile,
		"--turn-realm", "test.realm", "--turn-sockets", "2", "--turn-quota", "3"}, nil)
	if r.addrs.TURNUDP == nil || r.addrs.TURNTCP == nil {
		t.Fatalf("TURN not started: %+v", r.addrs)
	}
	forwardOnce(t, r.addrs.UDP, nil)

	// A standard TURN client allocates with REST-API credentials from the
	// secret in the file.
	user, pass := crypto.TURNCredentials([]byte(secret), "alice", time.Hour, time.Now())
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	cl, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: r.addrs.TURNUDP.String(), TURNServerAddr: r.addrs.TURNUDP.String(),
		Username: user, Password: pass, Realm: "test.realm", Conn: conn, RTO: 200 * time.Millisecond,
		LoggerFactory: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	alloc, err := cl.AllocateWithContext(ctx)
	if err != nil {
		t.Fatalf("TURN allocate: %v", err)
	}
	defer alloc.Close()
	_, body := metricstest.Get(t, "http://"+r.addrs.Admin.String()+"/metrics")
	if v := metricValue(t, body, "keymesh_turn_allocations_total"); v != 1 {
		t.Fatalf("turn allocations %v, want 1", v)
	}
}
