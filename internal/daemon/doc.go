// Package daemon is the keymesh peer daemon: it wraps a running node and
// serves a local API on a Unix socket for the `peer` CLI (status, ping, and
// byte streams to and from other peers), a SOCKS5 proxy into the overlay,
// and exposed local TCP ports.
//
// The local API is HTTP/1.1 over the Unix socket. Plain requests carry JSON
// (GET /v1/status, POST /v1/ping). Stream requests (POST /v1/dial, POST
// /v1/accept) ask for "Upgrade: keymesh-stream": on success the daemon
// answers "101 Switching Protocols" and the connection becomes a raw byte
// stream spliced to a peer stream, half-close included (the CLI's
// CloseWrite becomes the stream's end, and the remote's end becomes an EOF
// on the socket). On failure the answer is an ordinary JSON error.
//
// Client is the CLI's side of the same API.
package daemon
