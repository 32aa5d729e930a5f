// Package relayclient is the peer's side of the ticket relay (package relay is
// the server): Bind asks a relay for a ticket over a socket the caller owns.
// The frames themselves are in package wire. A peer links this package, never
// the relay server, its mesh or its metrics.
package relayclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/exchange"
	"github.com/keymesh/keymesh/internal/wire"
)

// ErrBindTimeout: Bind got no RelayBound before its context ended.
var ErrBindTimeout = errors.New("relay: no answer to bind")

// Binding is a relay's answer to a bind: the ticket to publish, the address
// the relay saw, and when the ticket expires.
type Binding struct {
	Ticket   []byte
	Observed netip.AddrPort
	Expiry   time.Time
}

// bindRetry is how long Bind waits for an answer before asking again.
const bindRetry = 500 * time.Millisecond

// maxChallenges is how many challenges in a row Bind answers at once; past
// that it waits bindRetry between binds, so that a relay (or someone
// spoofing one) that keeps challenging cannot spin it.
const maxChallenges = 3

// Bind asks the relay at addr for a ticket, over conn, as id, and waits for
// the answer (asking again every half second) until ctx ends. The relay
// first answers with a challenge (a cookie for conn's address as it sees
// it); Bind signs again with the cookie and gets the ticket. It reads conn
// itself and skips whatever else arrives, so it suits tools and tests whose
// socket has no other reader; a peer's path layer instead sends
// wire.AppendRelayBind and handles the answers in its own demux.
func Bind(ctx context.Context, conn net.PacketConn, addr net.Addr, id *crypto.Identity) (Binding, error) {
	var (
		cookie     crypto.Cookie
		req        wire.RelayBind
		challenges int
		b          Binding
	)
	err := exchange.Run(ctx, exchange.Config{
		Conn: conn, To: addr, Retry: bindRetry, BufSize: wire.MaxFrame,
		Request: func() []byte {
			frame := wire.AppendRelayBind(nil, id, time.Now(), cookie)
			req, _ = wire.PeekRelayBind(frame)
			return frame
		},
		Answer: func(buf []byte, from net.Addr) (exchange.Verdict, error) {
			if addrPort(from) != addrPort(addr) || len(buf) == 0 {
				return exchange.Skip, nil
			}
			switch buf[0] {
			case wire.TypeRelayChallenge:
				c, err := wire.ParseRelayChallenge(buf)
				if err != nil || c.Echo != req.Echo {
					return exchange.Skip, nil
				}
				cookie = c.Cookie
				if challenges++; challenges <= maxChallenges {
					return exchange.Again, nil // sign again with the cookie at once
				}
			case wire.TypeRelayBound:
				bound, err := wire.ParseRelayBound(buf)
				if err != nil || bound.Echo != req.Echo {
					return exchange.Skip, nil
				}
				b = Binding{Ticket: bound.Ticket, Observed: bound.Observed, Expiry: bound.Expiry}
				return exchange.Done, nil
			}
			return exchange.Skip, nil
		},
	})
	if errors.Is(err, exchange.ErrNoAnswer) {
		cause := ctx.Err()
		if cause == nil {
			cause = context.DeadlineExceeded
		}
		return Binding{}, fmt.Errorf("%w from %s: %w", ErrBindTimeout, addr, cause)
	}
	if err != nil {
		return Binding{}, fmt.Errorf("relay bind: %w", err)
	}
	return b, nil
}

// addrPort converts a net.Addr to an unmapped AddrPort; the zero AddrPort
// when it is not an IP address and port.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	if u, ok := a.(*net.UDPAddr); ok {
		ap = u.AddrPort()
	} else if a != nil {
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
