// Package overlay carries IP packets between peers: it reads packets from a
// TUN device (the kernel's, or gVisor's userspace stack), sends each to the
// peer that owns its destination overlay address as a QUIC datagram, and
// writes the packets that peers send back into the device.
package overlay
