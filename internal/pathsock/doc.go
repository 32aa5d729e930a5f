// Package pathsock is the peer's path layer: it owns the peer's one UDP
// socket and offers QUIC a net.PacketConn on which every remote peer sits at
// one stable virtual address, [VirtualAddr] (its overlay address, port 1),
// whatever real path its packets take.
//
// Underneath, the layer picks each peer's path. The relay comes first, so
// the first packet never waits for punching; at the moment the rendezvous
// gives (Punch or ConnectReply Start) every candidate of the peer is probed
// with sealed Probe frames on the schedule of internal/nat; the first
// authenticated ProbeReply opens a direct path, and the lowest-RTT direct
// path is kept. The active direct path is probed (every 500 ms while traffic
// flows, every 5 s when idle); three unanswered probes fall back to the
// relay within 2 s. A peer silent over the direct path while data goes out
// to it makes the path suspect (liveness.go): it is probed every 100 ms
// tick and given up after two probes unanswered for 200 ms, so a cut
// moves to the relay within about half a second. A lost direct path is
// treated as a change of this peer's own addresses (its NAT may have
// forgotten its mappings, the relay ticket's port among them): the relay
// is bound again at once, the peer re-registers and sends PathUpdates,
// at most once a second. The peer's candidates are probed again, every
// second for a minute after the loss (nat.UpgradeInterval later on), so
// that a direct path that comes back is taken again.
//
// The relay path in use is probed every tick once it looks lost; after
// 300 ms of silence while data goes out the relay counts as lost (a killed
// relay instance): every relay is bound again at once, and every 200 ms
// while unanswered. A relay that answers only after a retry (the anycast
// address now leads to another instance, which seals its own instance
// into the ticket) or another relay answering first is a new relay path:
// the layer re-registers and sends PathUpdates with the new ticket. Any
// sealed frame that ends a peer's silence resends the packets sent since
// (resend.go), on the path the frame left in place.
//
// Every timing decision about one peer is a method of peer that takes the
// time (Config.Now) and returns what to send (fsm.go); Sock, the shell,
// owns the sockets, goroutines and timers and executes the result.
//
// The layer finds its own NAT's mapping behaviour (NATBehaviour) from two
// observers it talks to anyway: the rendezvous' reflexive address and the
// address the relay saw. The same port twice is an easy (endpoint-
// independent) NAT, two ports a hard one; the value is registered and sent
// in PathUpdates. A hard side against an easy one punches by the birthday
// paradox (see birthday.go and internal/nat): the hard side opens many
// extra sockets that all probe the easy side, the easy side probes random
// ports of the hard side's address; the first extra socket to hear from
// the peer wins, only it answers the peer from then on (so both sides take
// the same one), and it carries that peer's direct path (its data frames
// go out one by one, without segmentation offload). When that path is
// lost to the relay (the hard side's NAT forgot its mappings), each side
// starts its side of a new punch at the tick that declares the loss, the
// easy side spraying at once, rather than at the peer's next PathUpdate.
// Two hard sides stay on the relay.
//
// A peer is no reflector (guard.go). Addresses a peer names are probed only
// when they could be its own: not loopback (unless this socket is on
// loopback), link-local, multicast or unspecified, and private or CGNAT
// only on one of this peer's own LAN prefixes or when the rendezvous saw
// the peer there. Until an address answers with an authenticated
// ProbeReply it gets at most candBudget probes a punch, all of a peer's
// unproven addresses together peerBudget per punchWindow, one destination
// address destRate a second and all of them unprovenRate a second. A Punch
// repeated within punchWindow does not restart the schedule; birthday
// punching opens at most maxBirthdaySockets sockets in all and runs once
// per peer and punchWindow (after the direct path it found is lost, again
// birthdayAgainAfter after the last start), towards the address the
// rendezvous saw. Only
// peers the layer knows are heard (a stranger's key costs no X25519); a
// Probe is answered only when its sealed time is within probeMaxAge of
// this clock, and, to a source that is not a proven path of that peer, at
// most replyRate a second per IPv4 address or IPv6 /64. These names are
// the defaults of Config.Limits (the peer's --reflect-* and
// --probe-reply-* flags).
//
// Everything shares the socket, told apart by the first byte (see
// internal/wire): STUN goes to a callback (the STUN client), frames sealed by
// the rendezvous server's key go to the rendezvous client, sealed frames of
// other keys are peer control frames (Probe, ProbeReply, PathUpdate), data
// and relayed frames carry QUIC packets, RelayBound frames answer the
// layer's relay bindings.
//
// A Relayed frame's payload is either a QUIC packet or, when its first byte
// is a keymesh frame type (0x20-0x2f), a sealed peer control frame that
// travelled through the relay. QUIC packets always have the fixed bit 0x40
// set in their first byte (RFC 9000, 17.2 and 17.3), so they never look like
// a keymesh frame.
//
// The layer notices its own address changes (interface addresses polled
// every second, the reflexive address from the rendezvous, the address the
// relay observes): it then asks to re-register, re-binds the relay, and sends
// every known peer a sealed PathUpdate over every path it has to it.
package pathsock
