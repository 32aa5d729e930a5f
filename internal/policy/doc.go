// Package policy decides which peers may reach which ports of this peer.
//
// Rules come from `peer up --allow` (repeatable; KEYMESH_ALLOW holds a
// comma-separated list):
//
//	--allow <peer-id>                  every port, TCP and UDP
//	--allow <peer-id>:22               port 22, TCP and UDP
//	--allow <peer-id>:80,443,8000-8099 a list and a range
//	--allow <peer-id>:53/udp,22/tcp    one protocol only
//	--allow web=<peer-id>:80           the same, naming the peer "web" (see
//	                                   package names)
//	--allow '*:80'                     any peer, port 80
//	--allow-any                        any peer, every port
//
// After a comma, a bare port item continues the rule before it, so that
// KEYMESH_ALLOW="<id>:80,443,<id2>" means <id> on 80 and 443, and <id2> on
// every port. What no rule allows is refused (default deny). Streams count
// as TCP; port 0 is the port of `peer listen` and `peer pipe`, so a rule
// with ports and without 0 keeps a peer from piping to this one.
//
// One Policy serves every path into the peer: the session check (a peer
// with no rule cannot open a session at all, AllowPeer), incoming streams
// (Allow), and the overlay data path (TUN and userspace netstack), whose
// router asks AllowPacket about each inbound packet that is not a reply
// (AllowPacket has the shape of overlay.Policy; it logs and counts a
// refused flow once a minute, not once a packet). Other IP protocols than
// TCP and UDP (ICMPv6) pass for every peer some rule admits.
//
// Every refusal is counted (Refused, by kind; `peer up` exports the counts
// as keymesh_peer_policy_refused_total) and logged in one line, at most
// LogBurst lines at once and LogRate a second after that: the rest are
// counted, and the next line says how many went unlogged.
package policy
