package rendezvous

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/wire"
)

// TestStreamRelaySourceSharesLargerBudget: every tunnelled peer of a TLS
// stream relay reaches the rendezvous from the relay's one address, so a
// few tunnels at the probe rate would use up that address's budget and no
// tunnelled peer would register. The relay's address (by default the IP
// host of a --stream-relay URL) gets StreamRelayFactor times the budget; a
// plain address keeps its own.
func TestStreamRelaySourceSharesLargerBudget(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.RateLimit = RateLimit{PerSecond: 1, Burst: 3}
		c.StreamRelays = []string{"wss://198.51.100.7:443/v1/tunnel"}
		c.StreamRelayFactor = 10
	})
	answered := 0
	for i := range 31 {
		p := f.newPeer(fmt.Sprintf("198.51.100.7:%d", 20000+i))
		answered += len(f.exchange(p.addr, f.seal(p, &wire.Register{})))
	}
	if answered != 30 {
		t.Fatalf("answered %d of 31 from the stream relay's address, want its burst of 3 x 10", answered)
	}
	plain := f.newPeer("198.51.100.8:20000")
	answered = 0
	for range 5 {
		answered += len(f.exchange(plain.addr, f.seal(plain, &wire.Register{})))
	}
	if answered != 3 {
		t.Fatalf("answered %d of 5 from a plain address, want its burst of 3", answered)
	}
}

func TestStreamRelayHosts(t *testing.T) {
	got := StreamRelayHosts([]string{"wss://203.0.113.9:443/v1/tunnel#abc", "wss://relay.example:443/", "wss://[2001:db8::7]:443", "::bad"})
	want := []netip.Prefix{netip.MustParsePrefix("203.0.113.9/32"), netip.MustParsePrefix("2001:db8::7/128")}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("StreamRelayHosts = %v, want %v", got, want)
	}
}

// TestTunnelFloodKeepsTunnelledPeerServed: a peer moved into a stream
// relay's TLS tunnel (UDP blocked mid-session) reaches the rendezvous from
// the relay's presence address, one port per tunnel, as every other
// tunnelled peer does. Self-made keys open tunnels of their own (the relay
// lets anyone, a few dozen per client address) and send what the relay
// lets each send, four times the presence address's whole budget
// together. The tunnelled peer's keepalives, one a second, must all be
// answered: a request that proved its presence port's cookie came through
// that tunnel, so it is charged to that tunnel alone (the relay bounds the
// tunnels and each one's rate); one tunnel beyond the per-source rate is
// still limited.
func TestTunnelFloodKeepsTunnelledPeerServed(t *testing.T) {
	const (
		rate    = 5
		burst   = 10
		factor  = 10
		tunnels = 4 * factor // each at the per-source rate: 4x the presence's budget
	)
	f := newFixture(t, func(c *Config) {
		c.RateLimit = RateLimit{PerSecond: rate, Burst: burst}
		c.StreamRelays = []string{"wss://198.51.100.7:443/v1/tunnel"}
		c.StreamRelayFactor = factor
	})
	victim := f.newPeer("198.51.100.7:20000")
	f.register(victim, wire.Register{AllowAny: true})
	bots := make([]*peer, tunnels)
	for i := range bots {
		bots[i] = f.newPeer(fmt.Sprintf("198.51.100.7:%d", 30000+i))
		f.register(bots[i], wire.Register{AllowAny: true})
		if i%factor == factor-1 {
			f.clock.Add(time.Second)
		}
	}
	keepalive := func(p *peer) bool {
		out := f.exchange(p.addr, f.seal(p, &wire.Keepalive{Cookie: p.cookie}))
		if len(out) != 1 {
			return false
		}
		_, ok := f.open(p, out[0].b).Body.(*wire.KeepaliveAck)
		return ok
	}
	for s := range 20 {
		for step := range 10 { // 100 ms steps; each bot every other one: at the rate
			for i, b := range bots {
				if i%2 == step%2 {
					keepalive(b)
				}
				if step == 5 && i == len(bots)/2 && !keepalive(victim) {
					t.Fatalf("second %d: the tunnelled peer's keepalive went unanswered under a flood from other tunnels (rate_limited %v)",
						s, f.rejected("rate_limited"))
				}
			}
			f.clock.Add(100 * time.Millisecond)
		}
	}
	answered := 0
	for range 3 * burst {
		if keepalive(bots[0]) {
			answered++
		}
	}
	if answered > burst {
		t.Fatalf("one tunnel got %d of %d keepalives answered at once, want at most the burst %d", answered, 3*burst, burst)
	}
}
