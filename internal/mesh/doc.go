// Package mesh carries authenticated messages between the instances of one
// keymesh deployment, so that a datagram for a peer leaves through the
// instance that holds the peer's flow.
//
// Behind a managed anycast front door (AWS Global Accelerator and the like)
// each client flow is pinned to one instance, and an instance's own sends
// leave from its regional address, which a NAT with address-dependent
// filtering drops. So when instance X has a datagram for peer B whose flow
// is held by instance Y (B's home), X hands the datagram to Y in one mesh
// message, and Y writes it to B from the socket B talks to. That is one
// extra hop at most, and it is just as right with plain BGP anycast, where
// any instance could have sent it.
//
// Messages are single UDP datagrams between the instances' mesh addresses
// (codec.go has the layout): their private addresses, or, where instances
// reach each other only at public addresses mapped 1:1 onto private ones
// (AWS across regions), the public one each advertises (Config.Advertise,
// Node.Self) while its socket binds the private one. Each carries the destination (B's
// address), the datagram to send there, a send time and a per-process
// sequence number, and ends in an HMAC-SHA256 tag (truncated to 16 bytes)
// under a key derived with HKDF from the deployment's peer secret. A Node
// checks, cheapest first: length and version, source allow-list (when it
// has one), clock, tag, then replay (a sliding window per sending process,
// WireGuard style), and only then the per-source rate of what it hands on.
// No budget an instance depends on is spent before the tag verified, so a
// flood spoofed from an instance's address cannot get its heartbeats
// dropped. The tag checks a stranger can cause are bounded by one budget
// over all sources: it pays for every message whose sender number (random
// per process) was not yet authenticated from that address and port, and
// an off-path stranger never learns a running instance's number (an
// instance that starts, or whose receiver starts, while a flood beyond
// the budget is spoofed from its address is heard once one of its
// messages wins a token). A stranger who does learn it (on the path
// between instances) can make a node check one tag per datagram it reads,
// and could drop the traffic as well.
//
// The mesh holds no state about flows: which instance is B's home is told
// by the message's sender, who learnt it from the registry record
// (rendezvous) or from B's relay ticket (relay).
//
// Peer liveness (live.go): a node sends each peer it watches (Config.Peers,
// the homes it was asked about through Alive, and the nodes whose
// heartbeats reached it) an authenticated heartbeat every
// HeartbeatInterval, naming its own mesh address; a heartbeat counts only
// when it comes from the address it names. Alive reports a peer down once
// nothing authentic came from it for DeadAfter: when a whole region dies,
// the front door moves its clients' flows to a surviving region, and the
// callers then send from their own socket instead of into the dead home.
// The table holds one last-heard time per peer address, bounded by
// Config.MaxWatched beyond the configured peers.
//
// The configured peers and the source allow-list may change at run time
// (SetPeers, SetAllow), as a membership registry (package meshreg) learns
// of instances coming and going; the list only decides whose messages get
// their tag checked, never what is accepted.
package mesh
