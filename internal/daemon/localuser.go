package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
)

// The daemon's local doors (the API socket, the SOCKS5 proxy, `peer
// forward`) act with the node's identity, so only the user who runs the
// daemon may use them. A Unix socket tells who connected (SO_PEERCRED); a
// TCP connection from this host is found in the kernel's socket table (the
// connection's remote end is a local socket there, with its owner's uid),
// by one sock_diag lookup by its addresses, so that a local user who holds
// thousands of connections open does not make every accept read a line
// for each (/proc/net/tcp and tcp6 are the fallback where the kernel has
// no sock_diag). A TCP connection from another host is not
// in the table: it is refused on a loopback listener (it cannot happen
// there) and admitted on a listener the operator bound to another address.

// OwnerOnly wraps ln so that Accept returns only connections from the
// current user (os.Geteuid) or, on a listener not bound to loopback, from
// other hosts. Refused connections are closed and logged.
func OwnerOnly(ln net.Listener, log *slog.Logger) net.Listener {
	return &ownerListener{Listener: ln, log: log, uid: os.Geteuid()}
}

type ownerListener struct {
	net.Listener
	log *slog.Logger
	uid int
}

func (l *ownerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if err := checkOwner(c, l.uid); err != nil {
			l.log.Warn("refused a local connection", "listener", l.Addr().String(), "err", err)
			c.Close()
			continue
		}
		return c, nil
	}
}

// errNotLocal means a TCP connection's other end is not a socket of this
// host (network namespace).
var errNotLocal = errors.New("not a connection from this host")

// errClosedEnd means the local socket at a TCP connection's other end has
// been closed by its process, so no process owns it any more.
var errClosedEnd = errors.New("the connecting socket was closed before it was checked")

// checkOwner admits c when the process at its other end runs as uid.
func checkOwner(c net.Conn, uid int) error {
	switch cc := c.(type) {
	case *net.UnixConn:
		got, err := unixPeerUID(cc)
		if err != nil {
			return fmt.Errorf("%w: who connected: %w", ErrOtherUser, err)
		}
		if got != uid {
			return fmt.Errorf("%w: uid %d connected, the daemon runs as uid %d", ErrOtherUser, got, uid)
		}
		return nil
	case *net.TCPConn:
		local, _ := cc.LocalAddr().(*net.TCPAddr)
		remote, _ := cc.RemoteAddr().(*net.TCPAddr)
		if local == nil || remote == nil {
			return fmt.Errorf("%w: not a TCP connection", ErrOtherUser)
		}
		got, err := tcpPeerUID(local.AddrPort(), remote.AddrPort())
		if errors.Is(err, errNotLocal) && !local.AddrPort().Addr().Unmap().IsLoopback() {
			return nil // another host, on a listener the operator opened to the network
		}
		if err != nil {
			return fmt.Errorf("%w: who connected from %s: %w", ErrOtherUser, remote, err)
		}
		if got != uid {
			return fmt.Errorf("%w: uid %d connected from %s, the daemon runs as uid %d", ErrOtherUser, got, remote, uid)
		}
		return nil
	}
	return fmt.Errorf("%w: cannot tell who is at the other end of a %T", ErrOtherUser, c)
}
