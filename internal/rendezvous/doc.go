// Package rendezvous is keymesh's rendezvous server: a connectionless UDP
// service that answers STUN Binding requests, indexes peers by public key
// (Register) and introduces one peer to another for hole punching (Connect),
// all on one socket.
//
// Every keymesh message stands alone, so any instance behind an anycast
// address may answer any packet: messages are NaCl boxes between the peer's
// identity and the server's (wire.TypeSealed), stamped with the sender's
// clock; Register and Connect carry a stateless cookie (crypto.CookieJar,
// secret shared by the instances) that proves the source address.
//
// A datagram from a stranger meets the cheap checks first and the stateful
// ones only once its address is proven:
//
//  1. the per-source datagram limit (IPv4 address or IPv6 /64, never the
//     port; internal/ratelimit);
//  2. the sender's box key: cached for peers that proved an address, else
//     one X25519 drawn from a per-source and a global budget (the cookie is
//     inside the box, so this is the one cost paid before the proof);
//  3. the box, the ±30 s clock window and the cookie: a message without a
//     valid cookie gets only a Challenge, smaller than the request, and
//     leaves nothing behind;
//  4. only then the key cache, the replay cache (bounded, evicting; see
//     package replay) and the registry (capped, evicting; per-source
//     registration limit).
//
// STUN Binding answers, the one reply larger than some requests, are
// limited per source on every socket, the RFC 5780 ones included. A
// replayed request from another source address fails the cookie check, so
// a replay cannot move a peer's record.
//
// Behind a managed anycast front door an instance's own sends leave from its
// regional address, which a peer's NAT drops unless that instance holds the
// peer's flow. With Config.Mesh set, a registration records this instance's
// mesh address as the peer's home (discovery.Record.Home), and a Punch for
// a peer homed on another instance is handed to that instance over the mesh
// (package mesh), which sends it from its own socket (DeliverPunches). The
// Connect's reply still leaves from the instance that got the Connect.
//
// The packet handler (Server.handle) is a pure step from one datagram to the
// datagrams to send back: the read loop in Serve only moves bytes between
// the socket and it, which keeps it testable and benchmarkable without
// sockets.
package rendezvous
