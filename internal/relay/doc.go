// Package relay is keymesh's stateless UDP ticket relay.
//
// A peer binds to the relay with a signed RelayBind; the relay answers with
// a RelayBound carrying a ticket: the peer's address as the relay saw it,
// its peer ID and an expiry, sealed under a key every relay instance shares
// (crypto.TicketKeys). The peer publishes the ticket through the rendezvous.
// To reach that peer, another peer sends the relay a RelaySend frame that
// begins with the ticket; the relay opens the ticket and forwards the rest,
// rewritten into a Relayed frame, to the address inside. The relay keeps no
// table of bindings or flows, so any instance behind an anycast address
// opens any ticket, and a restarted relay loses nothing.
//
// Behind a managed front door only the instance holding the destination's
// flow can send to it from an address its NAT accepts. So a relay with an
// instance number (Config.Instance) writes it into the tickets it seals,
// and a relay that opens a ticket naming another instance it knows
// (Config.MeshPeers) hands the Relayed frame to that instance over the mesh
// (package mesh), which sends it from its relay socket (DeliverRelayed):
// one extra hop at most. A ticket naming no instance, this one or an unknown
// one is forwarded from here.
//
// # Binds and address validation
//
// Before it checks a signature or seals a ticket, the relay wants proof
// that the bind comes from the address it claims, as QUIC's Retry does: a
// bind must carry the relay's cookie for its source address and port (a
// MAC over them and the time period under a secret derived from the ticket
// keys, so every instance accepts every other's cookies and keeps no
// state). A bind without one is answered with a RelayChallenge carrying the
// cookie, smaller than the bind; the peer signs again with it. The
// signature covers the cookie, so it vouches for the observed address, and
// a bind replayed from another address fails the MAC before any signature
// work. Each RelayBound carries the next cookie, so a bound peer's
// re-binds take one round trip.
//
// The checks run cheapest first: size, version and clock; the cookie; then,
// for a proven address only, the source's bind rate, the global budget of
// signature checks (Config.RateLimit.BindsPerSecond) and the signature. A
// flood of binds from spoofed addresses never gets past the cookie, so it
// cannot spend the budget that honest binds need. Every limit is keyed by
// the source's IPv4 address or IPv6 /64 (package ratelimit), never its
// port; challenges to unproven sources have their own per-source rate,
// which bounds what spoofed binds can reflect. A RelaySend's rate is
// charged once its ticket opened, to its source and the ticket's address
// together, so a flood spoofed from a peer's address with made-up tickets,
// or tickets to elsewhere, spends nothing of that peer's budget.
//
// Server.Serve reads one socket; call it once per socket of an SO_REUSEPORT
// group (package sockopt) to use more cores. On Linux a *net.UDPConn is read
// and written in batches (recvmmsg/sendmmsg) with no allocation per packet,
// and with segmentation offload where the kernel has it: UDP_GRO hands over
// a peer's segmented run of same-size RelaySends (keymesh peers send their
// QUIC packets that way) in one receive slot, and UDP_SEGMENT sends the
// forwards to one address as one message, each datagram still a suffix of
// the buffer it arrived in. Within a batch a ticket is opened once for a
// run of datagrams carrying the same ticket bytes (they open the same way
// at the same clock reading); every datagram still passes its own size
// and version checks, and its rate: a coalesced run whose every datagram
// carries the same ticket pays the per-pair rate for all of them in one
// look-up, after its ticket opened. The batch system calls are raw (they
// never sleep: MSG_DONTWAIT), so the Go runtime does not hand the
// processor off during a long segmented send. The SO_REUSEPORT hash puts each direction of a
// session (one source address and port) on one socket, so one Serve loop,
// one core, carries it.
//
// # Peer side
//
// The peer owns its one UDP socket (the path layer) and speaks to the relay
// with the wire codecs alone:
//
//	req := wire.AppendRelayBind(nil, id, time.Now(), cookie) // send to the relay (zero cookie at first)
//	ch, err := wire.ParseRelayChallenge(b)                   // a cookie: bind again with ch.Cookie
//	bd, err := wire.ParseRelayBound(b)                       // the ticket, and the next cookie
//	frame := wire.AppendRelaySend(nil, peerTicket, myTag, quicPacket)
//	tag, payload, err := wire.ParseData(relayed)             // what arrives
//
// Answers echo the start of the bind's signature (wire.Echo); a peer takes
// only an answer to its last bind. It re-binds every RebindInterval, which
// keeps its NAT mapping to the relay alive and renews the ticket before
// TicketTTL runs out. Bind does the whole exchange for tools and tests
// whose socket has no other reader.
package relay
