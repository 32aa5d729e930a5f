package policy

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
)

func peer(t testing.TB, b byte) crypto.PeerID {
	t.Helper()
	id, err := crypto.IdentityFromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return id.ID()
}

// digitPeer returns a peer whose ID starts with a digit, as one in about
// six does.
func digitPeer(t testing.TB) crypto.PeerID {
	for i := byte(1); ; i++ {
		if id := peer(t, i); id.String()[0] <= '9' {
			return id
		}
	}
}

func TestParseRules(t *testing.T) {
	a, b, d := peer(t, 1), peer(t, 2), digitPeer(t)
	rules, err := ParseRules([]string{
		a.String() + ":80,443,8000-8099,53/udp",
		"web=" + b.String(),
		"*:22/tcp",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		a.String() + ":80,443,8000-8099,53/udp",
		"web=" + b.String(),
		"*:22/tcp",
	}
	// A peer ID that starts with a digit starts a rule, in both forms.
	for _, v := range [][]string{{a.String() + ":80", d.String()}, {a.String() + ":80," + d.String() + ":22"}} {
		rs, err := ParseRules(v)
		if err != nil || len(rs) != 2 || rs[1].Peer != d {
			t.Errorf("ParseRules(%q) = %v, %v; want a second rule for %s", v, rs, err, d.Short())
		}
	}
	if len(rules) != len(want) {
		t.Fatalf("got %d rules, want %d: %v", len(rules), len(want), rules)
	}
	for i, r := range rules {
		if r.String() != want[i] {
			t.Errorf("rule %d: %s, want %s", i, r, want[i])
		}
	}
	// The environment form: one comma-separated list.
	env, err := ParseRules([]string{strings.Join(want, ",")})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range env {
		if r.String() != want[i] {
			t.Errorf("env rule %d: %s, want %s", i, r, want[i])
		}
	}
}

func TestParseRulesRejects(t *testing.T) {
	a := peer(t, 1).String()
	for _, s := range []string{
		"80",                              // ports before a peer
		a + ",80",                         // ports after an all-ports rule
		a + ":",                           // empty ports
		a + ":70000",                      // out of range
		a + ":90-80",                      // reversed range
		a + ":80/sctp",                    // unknown protocol
		"notapeer:80",                     // not a peer ID
		"1web=" + a,                       // name starting with a digit
		"we_b=" + a,                       // bad character
		"web=*:80",                        // a name for every peer
		"web-=" + a,                       // trailing hyphen
		strings.Repeat("a", 64) + "=" + a, // too long
	} {
		if _, err := ParseRules([]string{s}); !errors.Is(err, ErrBadRule) {
			t.Errorf("ParseRules(%q) = %v, want ErrBadRule", s, err)
		}
	}
}

func TestDefaultDeny(t *testing.T) {
	p := New(Config{})
	a := peer(t, 1)
	if p.AllowPeer(a) || p.Allow(a, TCP, 80) || p.Allow(a, UDP, 53) {
		t.Fatal("a policy without rules allowed a flow")
	}
	if p.AnyPeer() || len(p.Peers()) != 0 {
		t.Fatal("a policy without rules tells the rendezvous that someone may connect")
	}
}

func TestPortsAndProtocols(t *testing.T) {
	a, b, c := peer(t, 1), peer(t, 2), peer(t, 3)
	rules, err := ParseRules([]string{a.String() + ":80,8000-8099,53/udp", b.String(), "*:22/tcp"})
	if err != nil {
		t.Fatal(err)
	}
	p := New(Config{Rules: rules})
	for _, tc := range []struct {
		peer  crypto.PeerID
		proto Proto
		port  uint16
		want  bool
	}{
		{a, TCP, 80, true}, {a, UDP, 80, true}, {a, TCP, 8000, true}, {a, TCP, 8099, true},
		{a, TCP, 8100, false}, {a, TCP, 7999, false}, {a, UDP, 53, true}, {a, TCP, 53, false},
		{a, TCP, 0, false}, {a, TCP, 22, true}, {a, UDP, 22, false},
		{b, TCP, 0, true}, {b, UDP, 65535, true},
		{c, TCP, 22, true}, {c, TCP, 80, false},
	} {
		if got := p.Check(tc.peer, tc.proto, tc.port); got != tc.want {
			t.Errorf("Check(%s, %s, %d) = %v, want %v", tc.peer.Short(), tc.proto, tc.port, got, tc.want)
		}
	}
	if !p.AnyPeer() {
		t.Error("a rule for * does not open sessions to any peer")
	}
	if got := p.Peers(); len(got) != 2 {
		t.Errorf("Peers() = %v, want a and b", got)
	}
	any := New(Config{AllowAny: true})
	if !any.Allow(c, UDP, 9) || !any.AllowPeer(c) {
		t.Error("--allow-any refused a flow")
	}
}

// TestRefusalLoggedAndCounted: every refused flow increments the counter
// by kind and writes one log line naming peer, port and kind.
func TestRefusalLoggedAndCounted(t *testing.T) {
	a, b := peer(t, 1), peer(t, 2)
	rules, _ := ParseRules([]string{a.String() + ":80"})
	var buf bytes.Buffer
	p := New(Config{Rules: rules, Logger: slog.New(slog.NewTextHandler(&buf, nil))})

	if !p.Allow(a, TCP, 80) {
		t.Fatal("an allowed flow was refused")
	}
	if buf.Len() != 0 {
		t.Fatalf("an allowed flow was logged: %s", buf.String())
	}
	p.Allow(a, TCP, 22)
	p.Allow(a, UDP, 5353)
	p.AllowPeer(b)

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d log lines for 3 refusals:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{"kind=tcp peer=" + a.String() + " port=22", "kind=udp peer=" + a.String() + " port=5353", "kind=session peer=" + b.String()} {
		if !strings.Contains(lines[i], "policy refused a flow") || !strings.Contains(lines[i], want) {
			t.Errorf("log line %d = %q, want it to contain %q", i, lines[i], want)
		}
	}
	for kind, want := range map[string]float64{KindTCP: 1, KindUDP: 1, KindSession: 1} {
		if got := p.Refused(kind); got != uint64(want) {
			t.Errorf("Refused(%s) = %d, want %v", kind, got, want)
		}
	}
}

// TestRefusalLogLimited: a peer that floods refused flows gets every one
// counted but only LogBurst lines at once; once the clock moves on, the
// next line says how many went unlogged.
func TestRefusalLogLimited(t *testing.T) {
	a := peer(t, 1)
	var buf bytes.Buffer
	now := time.Unix(1e9, 0)
	p := New(Config{Logger: slog.New(slog.NewTextHandler(&buf, nil)), Now: func() time.Time { return now }})
	const flood = 1000
	for i := range flood {
		p.Allow(a, UDP, uint16(i))
	}
	if got := p.Refused(KindUDP); got != flood {
		t.Fatalf("counted %d refusals of %d", got, flood)
	}
	if got := strings.Count(buf.String(), "\n"); got != LogBurst {
		t.Fatalf("logged %d lines for a flood of %d at one instant, want %d", got, flood, LogBurst)
	}
	buf.Reset()
	now = now.Add(time.Second)
	p.Allow(a, UDP, 1)
	if want := "unlogged_before=980"; !strings.Contains(buf.String(), want) {
		t.Errorf("the line after the flood = %q, want %q", buf.String(), want)
	}
}
