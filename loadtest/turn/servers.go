package turn

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/testutil/coturn"
	"github.com/keymesh/keymesh/internal/turnrelay"
)

// benchServer is a TURN server under test.
type benchServer interface {
	addr(tcp bool) netip.AddrPort
	cpu() (time.Duration, error) // CPU time used so far
	stop()
}

// ourServer is our relay, in this process.
type ourServer struct {
	s        *turnrelay.Server
	udp, tcp netip.AddrPort
}

func startOurs(ctx context.Context, sockets int, log *slog.Logger) (*ourServer, error) {
	pcs, lns, err := turnrelay.OpenSockets(ctx, "127.0.0.1:0", "127.0.0.1:0", sockets)
	if err != nil {
		return nil, err
	}
	s, err := turnrelay.New(turnrelay.Config{
		PacketConns:           pcs,
		Listeners:             lns,
		Realm:                 benchRealm,
		Secret:                []byte(benchSecret),
		MaxAllocationsPerUser: -1, // uclient leaves one probe allocation per session
		// The benchmark's clients and echo peer are all on loopback, as
		// coturn's config allows for its side: no per-source allocation
		// rate, no server-wide cap, loopback peers allowed.
		MaxAllocations:       -1,
		AllocationRate:       -1,
		MaxTCPConnsPerSource: -1,
		AllowDestinations:    []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Logger:               log,
		Registerer:           prometheus.NewRegistry(),
	})
	if err != nil {
		for _, c := range pcs {
			c.Close()
		}
		for _, l := range lns {
			l.Close()
		}
		return nil, err
	}
	return &ourServer{
		s:   s,
		udp: pcs[0].LocalAddr().(*net.UDPAddr).AddrPort(),
		tcp: lns[0].Addr().(*net.TCPAddr).AddrPort(),
	}, nil
}

func (o *ourServer) addr(tcp bool) netip.AddrPort {
	if tcp {
		return o.tcp
	}
	return o.udp
}

// cpu is this whole process's CPU time: the relay is what runs in it
// during a measurement (besides reading the clients' output).
func (o *ourServer) cpu() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

func (o *ourServer) stop() { o.s.Close() }

// coturnServer is coturn's turnserver, a child process.
type coturnServer struct {
	p   *coturn.Process
	ap  netip.AddrPort
	dir string
}

func startCoturn(ctx context.Context, threads int) (*coturnServer, error) {
	port, err := coturn.FreePort(benchLoopback)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "loadtest-coturn-")
	if err != nil {
		return nil, err
	}
	ap := netip.AddrPortFrom(benchLoopback, port)
	p, err := coturn.StartServer(ctx, coturn.ServerConfig{
		Dir: dir, Listen: ap, Secret: benchSecret, Realm: benchRealm, Threads: threads,
		MinPort: 5000, MaxPort: 32000,
	}, nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &coturnServer{p: p, ap: ap, dir: dir}, nil
}

func (c *coturnServer) addr(bool) netip.AddrPort    { return c.ap }
func (c *coturnServer) cpu() (time.Duration, error) { return c.p.CPU() }
func (c *coturnServer) stop() {
	c.p.Stop()
	os.RemoveAll(c.dir)
}
