package e2e

import (
	"context"
	"net/netip"
	"testing"

	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/internal/testutil/debpkg"
)

// natMeshLab is the lab the NAT tests share: the server binaries, hosts x
// and y for the two instances and a Redis host on the lab's public
// segment (Redis running there), and two port-restricted sites, a and b.
type natMeshLab struct {
	rdvBin, relayBin string
	x, y, redis      *natlab.Host
	a, b             *natlab.Host
	redisAddr        netip.AddrPort
	lab              *natlab.Lab
}

// newNATMeshLab builds it; the lab goes when the test ends.
func newNATMeshLab(ctx context.Context, t *testing.T) natMeshLab {
	t.Helper()
	redisBin := debpkg.Require(t, "redis-server", "redis-server")
	var l natMeshLab
	l.rdvBin, l.relayBin = binaries(t)
	lab, err := natlab.New(ctx, natlab.Config{})
	l.lab = lab
	if err != nil {
		t.Fatalf("natlab: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("natlab close: %v", err)
		}
	})
	host := func(name string) *natlab.Host {
		h, err := lab.AddServer(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	site := func(name string) *natlab.Host {
		s, err := lab.AddSite(ctx, name, natlab.PortRestricted)
		if err != nil {
			t.Fatal(err)
		}
		return s.Host()
	}
	l.redis, l.x, l.y = host("redis"), host("x"), host("y")
	l.a, l.b = site("a"), site("b")

	// Redis on the lab's public segment, reached by both instances.
	l.redisAddr = netip.AddrPortFrom(l.redis.Addr, 6379)
	startCmd(t, "redis", l.redis.Command(ctx, redisBin, "--bind", l.redis.Addr.String(), "--port", "6379",
		"--protected-mode", "no", "--save", "", "--appendonly", "no"))
	waitRedis(t, ctx, l.redis, l.redisAddr)
	return l
}
