package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// Binding is a relay's answer to a bind: the ticket to publish, the address
// the relay saw, and when the ticket expires.
type Binding struct {
	Ticket   []byte
	Observed netip.AddrPort
	Expiry   time.Time
}

// bindRetry is how long Bind waits for an answer before asking again.
const bindRetry = 500 * time.Millisecond

// Bind asks the relay at addr for a ticket, over conn, as id, and waits for
// the answer (asking again every half second) until ctx ends. It reads conn
// itself and skips whatever else arrives, so it suits tools and tests whose
// socket has no other reader; a peer's path layer instead sends
// wire.AppendRelayBind and handles wire.ParseRelayBound in its own demux.
func Bind(ctx context.Context, conn net.PacketConn, addr net.Addr, id *crypto.Identity) (Binding, error) {
	defer conn.SetReadDeadline(time.Time{})
	buf := make([]byte, wire.MaxFrame)
	for {
		if _, err := conn.WriteTo(wire.AppendRelayBind(nil, id, time.Now()), addr); err != nil {
			return Binding{}, fmt.Errorf("relay bind: %w", err)
		}
		deadline := time.Now().Add(bindRetry)
		last := false
		if d, ok := ctx.Deadline(); ok && !d.After(deadline) {
			deadline, last = d, true
		}
		if err := conn.SetReadDeadline(deadline); err != nil {
			return Binding{}, fmt.Errorf("relay bind: %w", err)
		}
		for {
			n, from, err := conn.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return Binding{}, fmt.Errorf("relay bind: %w", err)
			}
			if addrPort(from) != addrPort(addr) {
				continue
			}
			t, obs, exp, err := wire.ParseRelayBound(buf[:n])
			if err != nil {
				continue
			}
			return Binding{Ticket: t, Observed: obs, Expiry: exp}, nil
		}
		if last || ctx.Err() != nil {
			cause := ctx.Err()
			if cause == nil {
				cause = context.DeadlineExceeded
			}
			return Binding{}, fmt.Errorf("%w from %s: %w", ErrBindTimeout, addr, cause)
		}
	}
}
