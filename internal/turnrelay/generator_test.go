package turnrelay

import (
	"net"
	"testing"

	"github.com/pion/turn/v5"

	"github.com/keymesh/keymesh/internal/testutil/ci"
)

// TestEvenPortTakenMeanwhile: pion probes for an even port, closes it and
// binds it again; when another socket took it in between, the generator
// serves another even port instead of failing the allocation.
func TestEvenPortTakenMeanwhile(t *testing.T) {
	g := &relayGenerator{
		static: &turn.RelayAddressGeneratorStatic{RelayAddress: net.IPv4(127, 0, 0, 1), Address: "127.0.0.1"},
		quota:  newQuota(5, -1),
		s:      &Server{own: newOwnPorts()},
	}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	g.metrics, _ = newMetrics(nil)
	// Hold an even port, as the racing socket would.
	var taken *net.UDPConn
	for taken == nil {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		if c.LocalAddr().(*net.UDPAddr).Port%2 == 0 {
			taken = c
			break
		}
		defer c.Close()
	}
	defer taken.Close()
	port := taken.LocalAddr().(*net.UDPAddr).Port

	pc, addr, err := g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4", UserID: "gina", RequestedPort: port})
	if err != nil {
		t.Fatalf("allocation on a taken even port: %v", err)
	}
	defer pc.Close()
	got := addr.(*net.UDPAddr).Port
	if got%2 != 0 || got == port {
		t.Fatalf("relay port %d: want another even port than %d", got, port)
	}
	if n := g.quota.count("gina"); n != 1 {
		t.Fatalf("quota counts %d, want 1", n)
	}

	// An odd requested port (a reservation's) is exact: no substitute.
	odd, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port + 1})
	if err != nil {
		ci.Skipf(t, "port %d busy: %v", port+1, err)
	}
	defer odd.Close()
	if _, _, err := g.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4", UserID: "gina", RequestedPort: port + 1}); err == nil {
		t.Fatal("taken odd (reserved) port substituted")
	}
	if n := g.quota.count("gina"); n != 1 {
		t.Fatalf("failed allocation kept its quota slot: %d", n)
	}
}
