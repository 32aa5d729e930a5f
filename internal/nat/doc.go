// Package nat holds the peer's NAT traversal policy: a small STUN client
// for the peer's reflexive address, the hole-punching schedule (when and how
// often to probe a remote peer's candidates), the keepalive and liveness
// intervals of a direct path, and the choice of punching strategy.
//
// The path layer (internal/pathsock) owns the socket and does the sending;
// this package only says what to send and when, and parses what comes back.
//
// Every interval is a documented constant, chosen against Linux conntrack's
// 30-second timeout for idle UDP mappings.
package nat
