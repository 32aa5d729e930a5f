package rendezvous

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/wire"
)

// epochRegistry is a memory registry whose epoch the test sets, as a Redis
// that came back empty would change it.
type epochRegistry struct {
	*discovery.Memory
	epoch atomic.Uint64
}

func (r *epochRegistry) Epoch(context.Context) (uint64, error) { return r.epoch.Load(), nil }

// TestEpochChangeNudgesRecentPeers: when the registry's epoch changes, the
// peers that registered here lately (at most Config.RecentPeers, the
// newest) each get one sealed Error{NotRegistered} carrying the new epoch,
// at the address their Register came from; the oldest beyond the bound get
// nothing. Everything stays on loopback.
func TestEpochChangeNudgesRecentPeers(t *testing.T) {
	reg := &epochRegistry{Memory: discovery.NewMemory(nil)}
	reg.epoch.Store(1)
	f := newFixture(t, func(c *Config) {
		c.Registry = reg
		c.RecentPeers = 2
	})
	out, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	f.srv.out.Store(net.PacketConn(out))

	var socks []*net.UDPConn
	var peers []*peer
	for range 3 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		p := f.newPeer(c.LocalAddr().String())
		f.register(p, wire.Register{AllowAny: true})
		socks, peers = append(socks, c), append(peers, p)
	}
	reg.epoch.Store(2)
	f.srv.refreshEpoch(context.Background())

	buf := make([]byte, 2048)
	for i, c := range socks {
		_ = c.SetReadDeadline(time.Now().Add(map[bool]time.Duration{true: 300 * time.Millisecond, false: 5 * time.Second}[i == 0]))
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if i == 0 {
			if err == nil {
				t.Errorf("the oldest registrant, beyond the bound of 2, was nudged")
			}
			continue
		}
		if err != nil {
			t.Fatalf("registrant %d: no nudge: %v", i, err)
		}
		e, ok := f.open(peers[i], buf[:n]).Body.(*wire.Error)
		if !ok || e.Code != wire.ErrCodeNotRegistered || e.Epoch != 2 {
			t.Fatalf("registrant %d got %+v, want Error{NotRegistered} with epoch 2", i, e)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, _, err := c.ReadFromUDPAddrPort(buf); err == nil {
			t.Errorf("registrant %d nudged twice for one change", i)
		}
	}
	// The same epoch again nudges nobody.
	f.srv.refreshEpoch(context.Background())
	_ = socks[2].SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := socks[2].ReadFromUDPAddrPort(buf); err == nil {
		t.Error("an unchanged epoch nudged a peer")
	}
}
