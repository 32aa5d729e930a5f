package turnrelay

import (
	"context"
	"fmt"
	"net"

	"github.com/keymesh/keymesh/internal/sockopt"
)

// OpenSockets opens what a Config needs: n UDP sockets bound to udpAddr with
// SO_REUSEPORT (none when udpAddr is empty) and one TCP listener on tcpAddr
// (none when empty). On error everything opened so far is closed.
func OpenSockets(ctx context.Context, udpAddr, tcpAddr string, n int) ([]net.PacketConn, []net.Listener, error) {
	var (
		pcs []net.PacketConn
		lns []net.Listener
	)
	if udpAddr != "" {
		conns, err := sockopt.ListenUDPGroup(ctx, udpAddr, n)
		if err != nil {
			return nil, nil, fmt.Errorf("turn udp: %w", err)
		}
		for _, c := range conns {
			pcs = append(pcs, c)
		}
	}
	if tcpAddr != "" {
		ln, err := sockopt.ListenTCP(ctx, tcpAddr, true)
		if err != nil {
			for _, c := range pcs {
				c.Close()
			}
			return nil, nil, fmt.Errorf("turn tcp: %w", err)
		}
		lns = append(lns, ln)
	}
	if len(pcs) == 0 && len(lns) == 0 {
		return nil, nil, ErrNoSockets
	}
	return pcs, lns, nil
}
