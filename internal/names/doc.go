// Package names maps short names and peer IDs under a DNS suffix to
// overlay addresses, and answers DNS queries for them.
//
// <peer-id>.<suffix> always resolves: the overlay address is derived from
// the key. <name>.<suffix> resolves only when this peer's own
// configuration maps the name to a key: its --name (itself), a name in an
// allow rule (web=<peer-id>), or a names file. Nothing learnt from the
// network (the rendezvous server, another peer) adds or changes a name, so
// no server can redirect one.
//
// The DNS server (Server) answers only AAAA questions under the suffix,
// refuses ANY and every other zone, never answers a response, and never
// sends back more than the question plus one AAAA record: it cannot be used
// to amplify a flood. It serves what the caller opens; ListenDNS opens
// only loopback or overlay addresses, and Serve ignores packets from
// elsewhere.
package names
