package streamrelay

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"
)

// TestStrangerFloodKeepsTunnelAnswers is the inbound flood on a tunnelled
// peer: a tunnel's presence address is its peer's public address (the
// rendezvous hands it to whoever connects to the peer), so anyone can send
// to it. A stranger floods it far beyond the tunnel's inbound rate while
// the peer's server, a destination the tunnel sends to, answers every
// request. Every answer reaches the peer, and of the stranger's datagrams
// the tunnel carries at most the unsolicited burst. (The clock stands
// still: no bucket refills, so a budget the flood spent stays spent.)
func TestStrangerFloodKeepsTunnelAnswers(t *testing.T) {
	const (
		burst     = 50 // the tunnel's inbound burst
		strangers = 20 // its unsolicited burst
		flood     = 10 * burst
		requests  = 30
	)
	clk := newClock()
	target, srv := startRelay(t, func(c *Config) {
		c.Now = clk.Now
		c.Rate, c.Burst = 100, burst
		c.UnsolicitedRate, c.UnsolicitedBurst = 10, strangers
	})
	server := newRecorder(t)
	server.answer.Store(true)
	tun := mustDial(t, target)
	presence := net.UDPAddrFromAddrPort(tun.Presence())

	// The peer has talked to its server before the flood: a destination
	// of the tunnel.
	if _, err := tun.WriteTo([]byte("hello"), server.addr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = tun.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := tun.ReadFrom(buf); err != nil {
		t.Fatalf("the server's first answer: %v", err)
	}
	handled := func() float64 { return srv.delivered() + srv.dropped(dropRate) + srv.dropped(dropStrangers) }
	base := handled()

	attacker, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	junk := make([]byte, 64)
	for i := 0; i < flood; i++ {
		if _, err := attacker.WriteTo(junk, presence); err != nil {
			t.Fatal(err)
		}
		if i%25 == 24 { // well within the presence socket's receive buffer
			waitFor(t, fmt.Sprintf("the relay to read %d datagrams of the flood", i+1),
				func() bool { return handled() >= base+float64(i+1) })
		}
	}

	// The peer's requests, answered by its server during the flood.
	for i := 0; i < requests; i++ {
		if _, err := tun.WriteTo(fmt.Appendf(nil, "request %d", i), server.addr()); err != nil {
			t.Fatal(err)
		}
	}
	answers, fromStranger := 0, 0
	_ = tun.SetReadDeadline(time.Now().Add(10 * time.Second))
	for answers < requests {
		n, from, err := tun.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%d of %d answers of the peer's server reached it through the flood (%v delivered, %v dropped in all): %v",
				answers, requests, srv.delivered(), srv.dropped(dropRate)+srv.dropped(dropStrangers), err)
		}
		switch {
		case from.String() == attacker.LocalAddr().String():
			fromStranger++
		case bytes.HasPrefix(buf[:n], []byte("request ")):
			answers++
		}
	}
	// The stranger's datagrams the tunnel carried were read before the
	// answers (the flood came first).
	if fromStranger > strangers {
		t.Fatalf("the tunnel carried %d of the stranger's datagrams, want at most the unsolicited burst of %d", fromStranger, strangers)
	}
}

func (s *Server) delivered() float64 { return value(s.m.packets.WithLabelValues("down")) }
