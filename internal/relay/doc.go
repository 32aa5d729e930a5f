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
// Server.Serve reads one socket; call it once per socket of an SO_REUSEPORT
// group (package sockopt) to use more cores. On Linux a *net.UDPConn is read
// and written in batches (recvmmsg/sendmmsg) with no allocation per packet.
//
// # Peer side
//
// The peer owns its one UDP socket (the path layer) and speaks to the relay
// with the wire codecs alone:
//
//	req := wire.AppendRelayBind(nil, id, time.Now())         // send to the relay
//	ticket, observed, expiry, err := wire.ParseRelayBound(b)  // the answer
//	frame := wire.AppendRelaySend(nil, peerTicket, myTag, quicPacket)
//	tag, payload, err := wire.ParseData(relayed)              // what arrives
//
// It re-binds every RebindInterval, which keeps its NAT mapping to the relay
// alive and renews the ticket before TicketTTL runs out. Bind does one
// exchange for tools and tests whose socket has no other reader.
package relay
