package rendezvous

import (
	"fmt"
	"net/netip"
	"testing"

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
