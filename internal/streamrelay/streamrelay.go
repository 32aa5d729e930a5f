// Package streamrelay carries a peer's UDP traffic over TLS on TCP, for
// networks that block UDP. A peer opens a WebSocket (so HTTP proxies pass it)
// to a relay on TCP port 443 and gets a UDP presence there: a UDP socket on
// the relay host that sends what the peer writes into the tunnel and hands the
// peer what arrives at it. Through it the peer registers with the rendezvous,
// binds relay tickets and talks to other peers exactly as it would from its
// own UDP socket: the rendezvous messages and the relay both run over TLS.
//
// # Protocol
//
// After the WebSocket upgrade at Path, every message is binary:
//
//	client hello  [0] version  [1:33] peer key  [33:41] time (Unix ms)  [41:105] Ed25519 signature over helloContext|[0:41]
//	server hello  [0] version  [1:19] presence address (wire.AddrLen form)
//	datagram      [0:18] address (destination from the client, source from the server)  [18:] payload
//
// The client's Tunnel is a net.PacketConn, so the peer's path layer uses it
// in place of a UDP socket.
//
// # What a stranger's tunnel may do
//
// Anyone can make a key, so a tunnel is no open UDP proxy. A datagram goes
// out only to a destination internal/addrpolicy accepts (no loopback,
// private, CGNAT, link-local such as 169.254.169.254, multicast, reserved,
// nor the server's own addresses, whose only reachable ports are the
// relay's public keymesh services and the live presences), unless the
// operator allowed the range. A destination whose address has never sent
// anything to the presence gets ProbeRate (enough to register, bind and
// punch); one that answered gets the tunnel's rate. Each tunnel has a
// bounded set of destinations, datagram and byte rates per direction, and
// an idle and a write timeout; each client IPv4 address or IPv6 /64 has a
// tunnel cap, an open rate, a connection rate at accept and a byte rate,
// each /24 or /48 a tunnel cap, and the relay a global one. Every refusal
// is counted by reason (keymesh_stream_dropped_total,
// keymesh_stream_tunnels_refused_total).
package streamrelay

import (
	"errors"
)

// Path is the HTTP path of the tunnel endpoint.
const Path = "/v1/tunnel"

// version is the tunnel protocol version.
const version = 1

// helloContext is signed with the client hello so the signature cannot be
// replayed as another keymesh message.
const helloContext = "keymesh stream tunnel v1"

const (
	clientHelloLen = 1 + 32 + 8 + 64
	serverHelloLen = 1 + 18
	addrLen        = 18
	// MaxPayload is the largest datagram a tunnel carries.
	MaxPayload = 1500
)

// Errors.
var (
	ErrHello    = errors.New("bad tunnel hello")
	ErrClosed   = errors.New("tunnel closed")
	ErrTooLarge = errors.New("datagram too large")
)
