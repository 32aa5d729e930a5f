// Package rendezvous is keymesh's rendezvous server: a connectionless UDP
// service that answers STUN Binding requests, indexes peers by public key
// (Register) and introduces one peer to another for hole punching (Connect),
// all on one socket.
//
// Every keymesh message stands alone, so any instance behind an anycast
// address may answer any packet: messages are NaCl boxes between the peer's
// identity and the server's (a peer's requests are wire.TypeRequest frames,
// the server's answers wire.TypeSealed), stamped with the sender's clock;
// Register and Connect carry a stateless cookie (crypto.CookieJar, secret
// shared by the instances) that proves the source address, inside the box
// and, as a proof keyed by it, in the request's nonce outside the box.
//
// A datagram from a stranger meets the cheap checks first and the stateful
// ones only once its address is proven:
//
//  1. the per-source datagram limit (IPv4 address or IPv6 /64, never the
//     port; internal/ratelimit);
//  2. the cookie proof in the request's nonce (a hash per cookie period):
//     without a valid one the request gets an unsealed CookieReply, smaller
//     than it, costs no X25519 and leaves nothing behind (WireGuard's
//     mac2 and cookie reply);
//  3. the sender's box key: cached for peers seen before, else one X25519
//     from the proven source's budget;
//  4. the box, the ±30 s clock window and the cookie inside the box (a
//     message whose inner cookie is not valid gets a sealed Challenge,
//     smaller than it);
//  5. only then the key cache, the replay cache (bounded, evicting; see
//     package replay) and the registry (capped, evicting; per-source
//     registration limit).
//
// STUN Binding answers, the one reply larger than some requests, are
// limited per source on every socket, the RFC 5780 ones included. A
// replayed request from another source address fails the cookie check, so
// a replay cannot move a peer's record; nor can one replayed from the
// peer's own address to another instance, whose replay cache never saw it:
// the registry stores a Register only over the record of an older one
// (register.go).
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
