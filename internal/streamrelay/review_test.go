package streamrelay

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestProbeRateAcrossPorts: the probe rate holds per destination address,
// as the package says. A tunnel spraying one datagram to each of many ports
// of a victim that never answers got ProbeBurst at every port (keyed by
// address and port), MaxDestinations times the flood the limit meant.
func TestProbeRateAcrossPorts(t *testing.T) {
	clk := newClock()
	target, srv := startRelay(t, func(c *Config) { c.Now = clk.Now; c.ProbeRate = 10; c.ProbeBurst = 5 })
	tun := mustDial(t, target)
	for i := range 50 {
		if _, err := tun.WriteTo([]byte("flood"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 20000 + i}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "50 datagrams handled", func() bool { return srv.sent()+srv.dropped(dropProbeRate) == 50 })
	if srv.sent() != 5 {
		t.Fatalf("%v datagrams reached 50 ports of an address that never answered, want the burst of 5", srv.sent())
	}
}

// TestProbeBucketsBounded: the per-address probe buckets go with the
// destinations that made them, so a tunnel spraying addresses holds no
// more of them than MaxDestinations.
func TestProbeBucketsBounded(t *testing.T) {
	c := &Config{MaxDestinations: 4, DestinationTTL: 30 * time.Second, ProbeRate: 10, ProbeBurst: 5}
	d := newDestinations()
	now := int64(0)
	for i := range 100 {
		now += int64(time.Second)
		d.allow(netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 9), now, c)
		if len(d.probes) > c.MaxDestinations || len(d.sent) > c.MaxDestinations {
			t.Fatalf("after %d addresses: %d probe buckets, %d destinations, cap %d", i+1, len(d.probes), len(d.sent), c.MaxDestinations)
		}
	}
}

// TestAnswerExpires: an address that answered lifts the probe rate toward
// it only while its answers are fresh. One answer long ago, and the tunnel
// could send it the full tunnel rate for ever (the heard entry had a time
// that nothing read): an address silent for DestinationTTL is probed again
// at ProbeRate, and a new answer lifts the limit again.
func TestAnswerExpires(t *testing.T) {
	c := &Config{MaxDestinations: 16, DestinationTTL: 30 * time.Second, ProbeRate: 10, ProbeBurst: 5}
	d := newDestinations()
	victim := netip.MustParseAddrPort("203.0.113.7:9")
	now := int64(time.Hour)
	d.allow(victim, now, c)
	d.heardFrom(victim.Addr(), now, c.MaxDestinations)
	sends := func(at int64, n int) (ok int) {
		for range n {
			if d.allow(victim, at, c) == "" {
				ok++
			}
		}
		return ok
	}
	if got := sends(now, 100); got != 100 {
		t.Fatalf("right after an answer %d of 100 datagrams went, want all", got)
	}
	later := now + int64(c.DestinationTTL) + int64(time.Second)
	if got := sends(later, 100); got > int(c.ProbeBurst)+1 {
		t.Fatalf("%v after the last answer %d of 100 datagrams went, want at most the probe burst of %v", c.DestinationTTL+time.Second, got, c.ProbeBurst)
	}
	d.heardFrom(victim.Addr(), later, c.MaxDestinations)
	if got := sends(later, 100); got != 100 {
		t.Fatalf("after a new answer %d of 100 datagrams went, want all", got)
	}
}
