// Package udpbatch holds the Linux pieces that every batched UDP loop of
// the servers shares: one recvmmsg or sendmmsg system call over a slice of
// message headers (a non-blocking call that reports when the poller must
// wait), and the socket addresses those headers carry, decoded into and
// encoded from netip.AddrPort. The ticket relay's loop (internal/relay)
// and TURN's ChannelData fast path (internal/turnrelay) are built on it;
// the segmentation offload control messages are internal/udpoffload's.
// Elsewhere than Linux the package is empty: its callers are Linux files.
package udpbatch
