// Package streamclient is the peer's side of the stream relay (package
// streamrelay is the server), and the tunnel protocol both speak. The stream
// relay carries a peer's UDP traffic over TLS on TCP, for
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

package streamclient

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
	ClientHelloLen = 1 + 32 + 8 + 64
	serverHelloLen = 1 + 18
	AddrLen        = 18
	// MaxPayload is the largest datagram a tunnel carries.
	MaxPayload = 1500
)

// Errors.
var (
	ErrHello    = errors.New("bad tunnel hello")
	ErrClosed   = errors.New("tunnel closed")
	ErrTooLarge = errors.New("datagram too large")
)
