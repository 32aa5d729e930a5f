// Package rendezvous is keymesh's rendezvous server: a connectionless UDP
// service that answers STUN Binding requests, indexes peers by public key
// (Register) and introduces one peer to another for hole punching (Connect),
// all on one socket.
//
// Every keymesh message stands alone, so any instance behind an anycast
// address may answer any packet: messages are NaCl boxes between the peer's
// identity and the server's (wire.TypeSealed), stamped with the sender's
// clock and checked against a ±30 s window and a (sender, nonce) replay
// cache; Register and Connect carry a stateless cookie (crypto.CookieJar,
// secret shared by the instances) and, without a valid one, get only a
// Challenge that is smaller than the request, so the server never amplifies
// a flood to a forged source address. A replayed request from another source
// address fails that cookie check, so a replay cannot move a peer's record.
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
