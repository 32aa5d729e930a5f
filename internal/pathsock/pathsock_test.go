package pathsock

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/wire"
)

func TestRelayFirstThenDirect(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	a, b := pair(t, r, nil, nil)
	// Before the punch start, the relay carries the first packets.
	if p := path(a, b); p != PathRelay {
		t.Fatalf("path before punching = %s, want relay", p)
	}
	exchange(t, a, b, "hello over the relay")
	waitFor(t, 3*time.Second, "direct path", func() bool { return path(a, b) == PathDirect && path(b, a) == PathDirect })
	st, _ := a.Peer(b.ID())
	if st.Remote != b.LocalAddrPort() || st.RTT <= 0 {
		t.Fatalf("direct status %+v, want remote %s and an RTT", st, b.LocalAddrPort())
	}
	before := a.Stats().DirectSent.Load()
	exchange(t, a, b, "hello direct")
	exchange(t, b, a, "hello back")
	if a.Stats().DirectSent.Load() == before {
		t.Fatal("no data frame went out directly")
	}
}

func TestNoDirectStaysOnRelay(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	noDirect := func(c *Config) { c.NoDirect = true }
	a, b := pair(t, r, noDirect, nil)
	// a refuses direct paths; b probes a, but a never answers.
	time.Sleep(1500 * time.Millisecond)
	if path(a, b) != PathRelay || path(b, a) != PathRelay {
		t.Fatalf("paths %s / %s, want relay with NoDirect", path(a, b), path(b, a))
	}
	exchange(t, a, b, "relayed one way")
	exchange(t, b, a, "relayed the other")
	if a.Stats().DirectSent.Load() != 0 {
		t.Fatal("NoDirect sock sent data directly")
	}
	res, err := a.Ping(ctx(t), b.ID())
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != PathRelay || res.Remote != r.addr || res.RTT <= 0 {
		t.Fatalf("ping %+v, want relay via %s", res, r.addr)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestPingDirect(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	a, b := pair(t, r, nil, nil)
	waitFor(t, 3*time.Second, "direct path", func() bool { return path(a, b) == PathDirect })
	res, err := a.Ping(ctx(t), b.ID())
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != PathDirect || res.Remote != b.LocalAddrPort() {
		t.Fatalf("ping %+v, want direct to %s", res, b.LocalAddrPort())
	}
	if _, err := a.Ping(ctx(t), newIdentity(t).ID()); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("ping of an unknown peer: %v", err)
	}
}

func TestFallbackToRelayAndUpgrade(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	a, b := pair(t, r, nil, nil)
	waitFor(t, 3*time.Second, "direct path", func() bool { return path(a, b) == PathDirect && path(b, a) == PathDirect })
	// Traffic flows, so liveness probes run at the fast pace.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			a.WriteTo([]byte("traffic"), VirtualAddr(b.ID()))
			b.WriteTo([]byte("traffic"), VirtualAddr(a.ID()))
		}
	}()
	time.Sleep(300 * time.Millisecond)
	a.cut.Store(true)
	took := waitFor(t, 3*time.Second, "fallback to relay", func() bool { return path(a, b) == PathRelay })
	if took > 2*time.Second {
		t.Fatalf("fallback took %v, want within 2 s", took)
	}
	waitFor(t, 3*time.Second, "fallback on the other side", func() bool { return path(b, a) == PathRelay })
	exchange(t, a, b, "after the cut")
	a.cut.Store(false)
	waitFor(t, 8*time.Second, "upgrade to direct", func() bool { return path(a, b) == PathDirect && path(b, a) == PathDirect })
}

func TestRebindNewPort(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	changed := make(chan struct{}, 8)
	a, b := pair(t, r, func(c *Config) { c.OnLocalChange = func() { changed <- struct{}{} } }, nil)
	waitFor(t, 3*time.Second, "direct path", func() bool { return path(a, b) == PathDirect && path(b, a) == PathDirect })
	old := a.LocalAddrPort()
	if err := a.Rebind("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if a.LocalAddrPort() == old {
		t.Fatal("port did not change")
	}
	select {
	case <-changed:
	case <-time.After(2 * time.Second):
		t.Fatal("OnLocalChange not called")
	}
	waitFor(t, 5*time.Second, "b's path to a's new port", func() bool {
		st, _ := b.Peer(a.ID())
		return st.Path == PathDirect && st.Remote == a.LocalAddrPort()
	})
	exchange(t, a, b, "from the new port")
	exchange(t, b, a, "to the new port")
}

func TestRelayRestart(t *testing.T) {
	keys := newTicketKeys(t)
	r := startRelay(t, keys, "127.0.0.1:0")
	noDirect := func(c *Config) { c.NoDirect = true }
	a, b := pair(t, r, noDirect, noDirect)
	exchange(t, a, b, "before the restart")
	r.stop()
	r2 := startRelay(t, keys, r.addr.String())
	_ = r2
	// Tickets survive: the relay keeps no state.
	exchange(t, a, b, "after the restart")
	exchange(t, b, a, "and back")
}

func TestStashBeforeIntroduction(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	a, b := newTestSock(t, nil), newTestSock(t, nil)
	a.SetRelays([]string{r.addr.String()})
	b.SetRelays([]string{r.addr.String()})
	waitFor(t, 3*time.Second, "tickets", func() bool { return len(a.Tickets()) > 0 && len(b.Tickets()) > 0 })
	// a knows b, b does not know a yet: a's packet waits in b's stash.
	if err := a.AddPeer(info(b), time.Now()); err != nil {
		t.Fatal(err)
	}
	a.WriteTo([]byte("early"), VirtualAddr(b.ID()))
	waitFor(t, 2*time.Second, "stashed packet", func() bool { return b.Stats().Stashed.Load() > 0 })
	if err := b.AddPeer(info(a), time.Now()); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 100)
	n, from, err := b.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "early" || from.String() != VirtualAddr(a.ID()).String() {
		t.Fatalf("got %q from %v, %v", buf[:n], from, err)
	}
}

func TestReadDeadlineAndClose(t *testing.T) {
	s := newTestSock(t, nil)
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, _, err := s.ReadFrom(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want deadline", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatal("deadline error is not a timeout")
	}
	s.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, _, err := s.ReadFrom(make([]byte, 10))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	s.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("err after close = %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("ReadFrom did not return after Close")
	}
	if _, err := s.WriteTo([]byte("x"), VirtualAddr(s.ID())); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

func TestServerFramesAndSTUNGoToCallbacks(t *testing.T) {
	server := newIdentity(t)
	gotServer := make(chan netip.AddrPort, 1)
	gotSTUN := make(chan int, 1)
	s := newTestSock(t, func(c *Config) {
		c.ServerKey = server.ID()
		c.OnServerFrame = func(b []byte, from netip.AddrPort) bool { gotServer <- from; return true }
		c.OnSTUN = func(b []byte, _ netip.AddrPort) { gotSTUN <- len(b) }
	})
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	shared, _ := server.SharedKey(s.ID())
	frame := wire.SealFrame(nil, server.ID(), shared, wire.Message{Time: 1, Body: &wire.Error{Code: 1}})
	conn.WriteToUDPAddrPort(frame, s.LocalAddrPort())
	select {
	case from := <-gotServer:
		if from != conn.LocalAddr().(*net.UDPAddr).AddrPort() {
			t.Fatalf("from %s", from)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("server frame not delivered")
	}
	stun := make([]byte, 20)
	stun[1] = 1
	copy(stun[4:8], []byte{0x21, 0x12, 0xa4, 0x42})
	conn.WriteToUDPAddrPort(stun, s.LocalAddrPort())
	select {
	case <-gotSTUN:
	case <-time.After(2 * time.Second):
		t.Fatal("STUN not delivered")
	}
}

func TestInterfaceChangeAnnounces(t *testing.T) {
	r := startRelay(t, newTicketKeys(t), "127.0.0.1:0")
	var ifs atomic.Value
	ifs.Store([]netip.Addr{netip.MustParseAddr("100.64.1.2")})
	changed := make(chan struct{}, 8)
	// a listens on every address: its candidates follow its interfaces. b
	// never probes (NoDirect), so nothing goes to the made-up addresses;
	// it sits on a's LAN, else a's private candidates would be refused.
	a, b := pair(t, r, func(c *Config) {
		c.ListenAddr = "0.0.0.0:0"
		c.Interfaces = func() ([]netip.Addr, error) { return ifs.Load().([]netip.Addr), nil }
		c.OnLocalChange = func() { changed <- struct{}{} }
	}, func(c *Config) {
		c.NoDirect = true
		c.LocalPrefixes = func() ([]netip.Prefix, error) { return []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}, nil }
	})
	exchange(t, a, b, "before")
	for len(changed) > 0 {
		<-changed
	}
	moved := netip.MustParseAddr("100.64.9.9")
	ifs.Store([]netip.Addr{moved})
	select {
	case <-changed:
	case <-time.After(3 * time.Second):
		t.Fatal("interface change not noticed")
	}
	want := netip.AddrPortFrom(moved, a.LocalAddrPort().Port())
	waitFor(t, 3*time.Second, "b to learn a's new candidate", func() bool {
		pr := b.peerByID(a.ID())
		pr.mu.Lock()
		defer pr.mu.Unlock()
		return pr.cands[want] != nil
	})
	exchange(t, a, b, "after")
}
