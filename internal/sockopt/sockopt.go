// Package sockopt opens UDP sockets and TCP listeners with the socket options
// the servers need, chiefly SO_REUSEPORT: several sockets bound to one address
// and port, among which the kernel spreads incoming flows by a hash of their
// addresses. A server that reads each socket in its own goroutine then scales
// past one reader per port ("anycast on one machine").
package sockopt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrGroupSize is returned by ListenUDPGroup for a group size below one.
var ErrGroupSize = errors.New("sockopt: group size must be at least 1")

// control returns a net.ListenConfig.Control function that sets
// SO_REUSEPORT on the socket before it is bound when reusePort is true.
// It deliberately leaves SO_REUSEADDR alone for UDP: on Linux that option
// lets any later socket share (and steal) a UDP port. Go sets it on TCP
// listeners by itself, which only permits rebinding over TIME_WAIT.
func control(reusePort bool) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		if !reusePort {
			return nil
		}
		var sockErr error
		err := c.Control(func(fd uintptr) {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				sockErr = fmt.Errorf("set SO_REUSEPORT: %w", err)
			}
		})
		if err != nil {
			return err
		}
		return sockErr
	}
}

// ListenUDP opens a UDP socket on addr ("host:port"; port 0 picks a free
// one). With reusePort it sets SO_REUSEPORT so that more sockets may bind the
// same address later (every one of them must set it).
func ListenUDP(ctx context.Context, addr string, reusePort bool) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: control(reusePort)}
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	conn, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("listen udp %s: unexpected %T", addr, pc)
	}
	return conn, nil
}

// ListenUDPGroup opens n UDP sockets bound to the same address with
// SO_REUSEPORT. When addr has port 0, the first socket picks a free port and
// the others bind that same port. On error every socket opened so far is
// closed.
func ListenUDPGroup(ctx context.Context, addr string, n int) ([]*net.UDPConn, error) {
	if n < 1 {
		return nil, fmt.Errorf("%w (got %d)", ErrGroupSize, n)
	}
	first, err := ListenUDP(ctx, addr, true)
	if err != nil {
		return nil, err
	}
	conns := []*net.UDPConn{first}
	bound := first.LocalAddr().String()
	for len(conns) < n {
		c, err := ListenUDP(ctx, bound, true)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// ListenTCP opens a TCP listener on addr ("host:port"; port 0 picks a free
// one). With reusePort it sets SO_REUSEPORT so that more listeners may bind
// the same address (the kernel then spreads new connections among them).
func ListenTCP(ctx context.Context, addr string, reusePort bool) (net.Listener, error) {
	lc := net.ListenConfig{Control: control(reusePort)}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	return ln, nil
}

// SetBuffers sets a socket's kernel receive and send buffer sizes in bytes
// (0 leaves one as it is). It asks with SO_RCVBUFFORCE / SO_SNDBUFFORCE
// first, which pass net.core.rmem_max / wmem_max with CAP_NET_ADMIN, and
// falls back to SO_RCVBUF / SO_SNDBUF, which the kernel caps at those
// limits. A server's shared socket needs room for bursts: at the default
// 208 KiB a few hundred full-size datagrams overflow it.
func SetBuffers(conn syscall.Conn, recv, send int) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var sockErr error
	set := func(fd int, force, plain, size int, what string) {
		if size <= 0 || sockErr != nil {
			return
		}
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) == nil {
			return
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size); err != nil {
			sockErr = fmt.Errorf("set %s buffer to %d: %w", what, size, err)
		}
	}
	err = rc.Control(func(fd uintptr) {
		set(int(fd), unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, recv, "receive")
		set(int(fd), unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, send, "send")
	})
	if err != nil {
		return err
	}
	return sockErr
}
