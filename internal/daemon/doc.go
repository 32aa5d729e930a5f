// Package daemon is the keymesh peer daemon: it wraps a running node and
// serves a local API on a Unix socket for the `peer` CLI (status, ping, and
// byte streams to and from other peers), a SOCKS5 proxy into the overlay,
// and exposed local TCP ports.
//
// Everything local acts with the node's identity, so only the user who runs
// the daemon may use it: the API socket has mode 0600 in a 0700 directory
// and the daemon refuses a client of another uid (SO_PEERCRED); the SOCKS5
// proxy and `peer forward` refuse TCP connections from another user of the
// host (the connecting socket's owner, found by one sock_diag lookup, or
// /proc/net/tcp and tcp6 where the kernel has no sock_diag); the CLI talks only to a socket
// its own user owns, served by a process of that user (see OwnerOnly).
//
// The local API is HTTP/1.1 over the Unix socket:
//
//	GET    /v1/status                  the node's status plus what the daemon serves (JSON)
//	POST   /v1/ping?peer=P&timeout=D   one ping (JSON)
//	POST   /v1/netcheck                NAT behaviour and relay latency (JSON)
//	POST   /v1/dial?peer=P&port=N      stream to port N of peer P (upgrade)
//	POST   /v1/accept?port=N           the next stream arriving for port N (upgrade)
//	GET    /v1/stream?id=I             how stream I ended (JSON), once it has
//	POST   /v1/expose?port=N[&bg=1]    expose 127.0.0.1:N to peers as port N
//	DELETE /v1/expose?port=N           stop a background expose
//
// Stream requests ask for "Upgrade: keymesh-stream": on success the daemon
// answers "101 Switching Protocols" (with Keymesh-Peer and Keymesh-Stream
// headers) and the connection becomes a raw byte stream spliced to the peer
// stream, half-close included: the CLI's CloseWrite becomes the stream's
// end, and the remote's end becomes an EOF on the socket. A byte stream
// cannot tell a reset from an end, so the CLI asks GET /v1/stream
// afterwards. On failure the answer is a JSON error {"error": "..."}.
//
// Client is the CLI's side of the same API.
package daemon
