package nat

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/wire"
)

// serveSTUN answers STUN Binding requests on a loopback socket until the
// test ends, like the rendezvous server does.
func serveSTUN(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil {
				continue
			}
			resp, err := stun.Build(req, stun.BindingSuccess,
				&stun.XORMappedAddress{IP: from.IP, Port: from.Port}, stun.Fingerprint)
			if err != nil {
				continue
			}
			pc.WriteToUDP(resp.Raw, from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestSTUNClientQuery(t *testing.T) {
	server := serveSTUN(t)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := NewSTUNClient(func(b []byte, to netip.AddrPort) error {
		_, err := conn.WriteToUDPAddrPort(b, to)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.Handle(buf[:n], from)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := c.Query(ctx, server)
	if err != nil {
		t.Fatal(err)
	}
	want := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	if got != want {
		t.Fatalf("reflexive = %s, want %s", got, want)
	}
}

func TestSTUNClientTimeout(t *testing.T) {
	c, err := NewSTUNClient(func([]byte, netip.AddrPort) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.Query(ctx, netip.MustParseAddrPort("127.0.0.1:9"))
	if !errors.Is(err, ErrSTUNTimeout) {
		t.Fatalf("err = %v, want ErrSTUNTimeout", err)
	}
	if len(c.waiting) != 0 {
		t.Fatalf("%d transactions left behind", len(c.waiting))
	}
}

func TestSchedule(t *testing.T) {
	now := time.Unix(1000, 0)
	s := NewSchedule(now.Add(150*time.Millisecond), now)
	if s.Active(now) {
		t.Fatal("active before start")
	}
	if !s.Active(now.Add(200 * time.Millisecond)) {
		t.Fatal("not active after start")
	}
	if s.Active(now.Add(150*time.Millisecond + PunchDuration)) {
		t.Fatal("active after the end")
	}
	at := now.Add(time.Second)
	if !s.Due(at, time.Time{}) || s.Due(at, at.Add(-PunchInterval/2)) || !s.Due(at, at.Add(-PunchInterval)) {
		t.Fatal("Due does not follow PunchInterval")
	}
	// Clock skew: a start long past or far ahead starts now.
	if got := NewSchedule(now.Add(-time.Hour), now).Start; !got.Equal(now) {
		t.Fatalf("past start = %v", got)
	}
	if got := NewSchedule(now.Add(time.Hour), now).Start; !got.Equal(now) {
		t.Fatalf("future start = %v", got)
	}
}

func TestLiveness(t *testing.T) {
	now := time.Unix(1000, 0)
	if ProbeInterval(now, now.Add(-time.Second)) != ActiveProbeInterval {
		t.Fatal("traffic should probe fast")
	}
	if ProbeInterval(now, now.Add(-time.Minute)) != KeepaliveInterval || ProbeInterval(now, time.Time{}) != KeepaliveInterval {
		t.Fatal("idle should probe at keepalive pace")
	}
	if Dead(now, MissedProbes-1, now.Add(-time.Minute)) || Dead(now, MissedProbes, now.Add(-DeadAfter/2)) {
		t.Fatal("declared dead too early")
	}
	if !Dead(now, MissedProbes, now.Add(-DeadAfter)) {
		t.Fatal("not declared dead")
	}
	// Worst-case detection with traffic stays inside 2 s: the first lost
	// probe goes out at most ActiveProbeInterval after the cut, and the
	// maintenance tick (100 ms) adds its period.
	worst := ActiveProbeInterval + time.Duration(MissedProbes-1)*ActiveProbeInterval + 100*time.Millisecond
	if worst < DeadAfter {
		worst = ActiveProbeInterval + DeadAfter + 100*time.Millisecond
	}
	if worst > 2*time.Second {
		t.Fatalf("worst-case fallback %v exceeds 2 s", worst)
	}
}

func TestChooseStrategy(t *testing.T) {
	if ChooseStrategy(wire.NATAddrPortDepend, wire.NATAddrDependent) != StrategyRelayOnly {
		t.Fatal("two hard NATs should stay on the relay")
	}
	if ChooseStrategy(wire.NATAddrPortDepend, 0) != StrategyProbe || ChooseStrategy(0, 0) != StrategyProbe ||
		ChooseStrategy(1, wire.NATAddrPortDepend) != StrategyProbe {
		t.Fatal("unknown or no NAT should probe")
	}
	if got := ChooseStrategy(wire.NATAddrPortDepend, wire.NATEndpointIndep); got != StrategyBirthdayHard {
		t.Fatalf("hard vs easy: %v, want birthday-hard", got)
	}
	if got := ChooseStrategy(wire.NATEndpointIndep, wire.NATAddrDependent); got != StrategyBirthdayEasy {
		t.Fatalf("easy vs hard: %v, want birthday-easy", got)
	}
}

func TestLocalCandidates(t *testing.T) {
	ifs := []netip.Addr{
		netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"),
		netip.MustParseAddr("100.64.1.2"), netip.MustParseAddr("fe80::1"),
		netip.MustParseAddr("2001:db8::5"), netip.MustParseAddr("fd4b::1"),
		netip.MustParseAddr("100.64.1.2"),
	}
	got := LocalCandidates(netip.MustParseAddrPort("[::]:4000"), ifs)
	want := []netip.AddrPort{netip.MustParseAddrPort("100.64.1.2:4000"), netip.MustParseAddrPort("[2001:db8::5]:4000")}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("dual stack: %v, want %v", got, want)
	}
	got = LocalCandidates(netip.MustParseAddrPort("0.0.0.0:4000"), ifs)
	if len(got) != 1 || got[0] != want[0] {
		t.Fatalf("v4 only: %v", got)
	}
	got = LocalCandidates(netip.MustParseAddrPort("127.0.0.1:4000"), ifs)
	if len(got) != 1 || got[0] != netip.MustParseAddrPort("127.0.0.1:4000") {
		t.Fatalf("bound to loopback: %v", got)
	}
}
