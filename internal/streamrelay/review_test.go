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
