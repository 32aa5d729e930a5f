// Package streamrelay is the stream relay server: it carries a peer's UDP
// traffic over TLS on TCP, for networks that block UDP. The tunnel protocol
// and the peer's side (Dial, Tunnel) are in package streamclient; a peer links
// that, never this package or its metrics.
//
// # What a stranger's tunnel may do
//
// Anyone can make a key, so a tunnel is no open UDP proxy. A datagram goes
// out only to a destination internal/addrpolicy accepts (no loopback,
// private, CGNAT, link-local such as 169.254.169.254, multicast, reserved,
// nor the server's own addresses, whose only reachable ports are the
// relay's public keymesh services and the live presences), unless the
// operator allowed the range. A destination whose address has never
// answered gets ProbeRate (enough to register, bind and punch); one that
// answered gets the tunnel's rate. An answer comes from a destination the
// tunnel sent to within DestinationTTL: an unsolicited datagram, which a
// stranger may spoof from a victim's address, is delivered but lifts no
// limit. Toward the keymesh
// servers (ServerAddrs, ServerPorts), which limit per source address and
// see every tunnel come from the one presence address, a tunnel gets
// ServerRate, RelaySend data aside, so that one tunnel cannot spend what
// they allow that address. Each tunnel has a
// bounded set of destinations, datagram and byte rates per direction, and
// an idle and a write timeout; each client IPv4 address or IPv6 /64 has a
// tunnel cap, an open rate, a connection rate at accept and a byte rate,
// each /24 or /48 a tunnel cap, and the relay a global one (about
// TunnelMemory each). Inbound, a tunnel's presence is its client's public
// address, which anyone can learn: datagrams from sources the tunnel has
// not sent to get UnsolicitedRate, a bucket of their own, so that a flood
// there cannot spend the rate that carries the answers of the servers and
// peers the client talks to (one spoofed from such a source still can,
// for that source's answers and the tunnel's other solicited ones); behind Server.Listener, a client at a cap is closed
// on accept, before its TLS handshake. Every refusal
// is counted by reason (keymesh_stream_dropped_total,
// keymesh_stream_tunnels_refused_total).
package streamrelay
