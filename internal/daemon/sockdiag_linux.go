package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// The kernel's sock_diag interface (NETLINK_SOCK_DIAG, what ss(8) uses)
// finds one TCP socket by its four addresses with a hash lookup, so
// learning who is at the other end of a loopback connection costs one
// request whatever the number of sockets on the host. Reading
// /proc/net/tcp instead costs a line per socket, which a local user who
// opens many connections can make as long as it likes, for every accept.
// The layouts below are the kernel's (linux/inet_diag.h, netlink.h).
const (
	nlmsgHdrLen       = 16
	inetDiagSockIDLen = 48 // sport, dport, src[4], dst[4], if, cookie[2]
	inetDiagReqV2Len  = 8 + inetDiagSockIDLen
	inetDiagMsgLen    = 4 + inetDiagSockIDLen + 20 // ... expires, rqueue, wqueue, uid, inode
	tcpListen         = 10                         // TCP_LISTEN, an inet_diag_msg's idiag_state
)

// errDiagUnavailable means sock_diag cannot answer here (no NETLINK_SOCK_DIAG
// or no tcp_diag in this kernel): the caller falls back to /proc/net/tcp.
var errDiagUnavailable = errors.New("sock_diag unavailable")

// diagPeerUID asks sock_diag for the TCP socket whose own end is self and
// whose peer is peer, and returns its owner's uid. errNotLocal when there
// is no such socket, errClosedEnd when no process holds it any more (a
// time-wait entry or an orphan: inode 0).
func diagPeerUID(self, peer netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errDiagUnavailable, err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, fmt.Errorf("%w: %w", errDiagUnavailable, err)
	}
	families := []uint8{unix.AF_INET6}
	if self.Addr().Is4() && peer.Addr().Is4() {
		// A v4 connection may sit on an AF_INET6 socket (v4-mapped).
		families = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	for _, fam := range families {
		uid, err := diagExact(fd, fam, self, peer)
		if errors.Is(err, errNotLocal) {
			continue
		}
		return uid, err
	}
	return 0, errNotLocal
}

// diagExact sends one exact-match request and reads its answer.
func diagExact(fd int, family uint8, self, peer netip.AddrPort) (int, error) {
	req := make([]byte, nlmsgHdrLen+inetDiagReqV2Len)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST) // no NLM_F_DUMP: one socket, by hash
	ne.PutUint32(req[8:], 1)                  // sequence
	r := req[nlmsgHdrLen:]
	r[0], r[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 0xffffffff) // every state
	putSockID(r[8:], family, self, peer)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("%w: %w", errDiagUnavailable, err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errDiagUnavailable, err)
	}
	return parseDiagAnswer(buf[:n])
}

// putSockID writes an inet_diag_sockid: ports and addresses in network
// byte order, IPv4 in the first word, no interface, no cookie.
func putSockID(b []byte, family uint8, self, peer netip.AddrPort) {
	binary.BigEndian.PutUint16(b[0:], self.Port())
	binary.BigEndian.PutUint16(b[2:], peer.Port())
	put := func(dst []byte, a netip.Addr) {
		if family == unix.AF_INET {
			a4 := a.Unmap().As4()
			copy(dst, a4[:])
			return
		}
		a16 := a.As16() // an IPv4 address becomes v4-mapped
		copy(dst, a16[:])
	}
	put(b[4:20], self.Addr())
	put(b[20:36], peer.Addr())
	binary.NativeEndian.PutUint32(b[40:], 0xffffffff) // INET_DIAG_NOCOOKIE
	binary.NativeEndian.PutUint32(b[44:], 0xffffffff)
}

// parseDiagAnswer reads the uid out of a sock_diag answer: an
// inet_diag_msg, or a netlink error (ENOENT: no such socket).
func parseDiagAnswer(b []byte) (int, error) {
	ne := binary.NativeEndian
	if len(b) < nlmsgHdrLen {
		return 0, fmt.Errorf("%w: short answer", errDiagUnavailable)
	}
	switch typ := ne.Uint16(b[4:]); typ {
	case unix.NLMSG_ERROR:
		if len(b) < nlmsgHdrLen+4 {
			return 0, fmt.Errorf("%w: short error", errDiagUnavailable)
		}
		switch e := unix.Errno(-int32(ne.Uint32(b[nlmsgHdrLen:]))); e {
		case unix.ENOENT:
			return 0, errNotLocal
		default:
			return 0, fmt.Errorf("%w: %w", errDiagUnavailable, e)
		}
	case unix.SOCK_DIAG_BY_FAMILY:
		m := b[nlmsgHdrLen:]
		if len(m) < inetDiagMsgLen {
			return 0, fmt.Errorf("%w: short inet_diag_msg", errDiagUnavailable)
		}
		// The exact lookup falls back to a listener on the address the
		// connection came from when its socket is gone: a listener is
		// nobody's end of a connection (idiag_state, after idiag_family).
		if m[1] == tcpListen {
			return 0, errNotLocal
		}
		uid, inode := ne.Uint32(m[inetDiagMsgLen-8:]), ne.Uint32(m[inetDiagMsgLen-4:])
		if inode == 0 {
			return 0, errClosedEnd
		}
		return int(uid), nil
	default:
		return 0, fmt.Errorf("%w: answer of type %d", errDiagUnavailable, typ)
	}
}
