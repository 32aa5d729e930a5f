package streamrelay

import (
	"net"
	"testing"
	"time"
)

// TestSpoofedAnswerKeepsProbeRate is the attack on the probe rate: a
// tunnel's presence address is public, so a datagram spoofed from a
// victim's address can reach it before the tunnel ever sent there. That
// datagram is no answer: the tunnel's client, sending to the victim above
// ProbeRate, still gets only the never-answered limit through (ProbeBurst
// on a stopped clock, ProbeRate more a second), not the tunnel's rate. The
// spoofed datagram itself is still delivered, as a peer's first packet is.
func TestSpoofedAnswerKeepsProbeRate(t *testing.T) {
	const (
		probeRate, probeBurst = 10, 20
		sends                 = 100
	)
	clk := newClock()
	target, srv := startRelay(t, func(c *Config) {
		c.Now = clk.Now
		c.Rate, c.Burst = 1000, 1000
		c.ProbeRate, c.ProbeBurst = probeRate, probeBurst
	})
	victim := newRecorder(t)
	tun := mustDial(t, target)
	presence := net.UDPAddrFromAddrPort(tun.Presence())

	// One datagram "from the victim" (sent from its very address and
	// port, as a spoofer would forge it) to the presence.
	if _, err := victim.c.WriteTo([]byte("spoofed"), presence); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = tun.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, from, err := tun.ReadFrom(buf); err != nil || string(buf[:n]) != "spoofed" || from.String() != victim.addr().String() {
		t.Fatalf("the unsolicited datagram was not delivered: %q from %v, %v", buf[:n], from, err)
	}

	handled := func() float64 { return srv.sent() + srv.dropped(dropProbeRate) }
	for round, want := range []float64{probeBurst, probeBurst + probeRate} {
		for i := 0; i < sends; i++ {
			if _, err := tun.WriteTo([]byte("flood"), victim.addr()); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "the client's datagrams handled", func() bool { return handled() == float64((round+1)*sends) })
		if got := srv.sent(); got > want {
			t.Fatalf("after round %d the victim was sent %v datagrams, want at most the never-answered limit of %v", round+1, got, want)
		}
		waitFor(t, "the victim to read what was sent", func() bool { return float64(victim.n.Load()) == srv.sent() })
		clk.Add(time.Second)
	}
}
