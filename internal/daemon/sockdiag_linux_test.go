package daemon

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keymesh/keymesh/internal/testutil/ci"
)

// loopbackPairs opens n TCP connections to a loopback listener on network
// ("tcp4" or "tcp6") and returns them with the listener's ends; all are
// closed when the test ends.
func loopbackPairs(tb testing.TB, network, addr string, n int) (clients, servers []net.Conn) {
	tb.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		ci.Skip(tb, err.Error())
	}
	tb.Cleanup(func() { ln.Close() })
	for range n {
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			tb.Fatal(err)
		}
		clients, servers = append(clients, c), append(servers, s)
		tb.Cleanup(func() { c.Close(); s.Close() })
	}
	return clients, servers
}

func ends(c net.Conn) (local, remote *net.TCPAddr) {
	return c.LocalAddr().(*net.TCPAddr), c.RemoteAddr().(*net.TCPAddr)
}

// TestDiagAgreesWithProc: sock_diag and /proc/net/tcp name the same owner
// for a loopback connection, IPv4 and IPv6, and both say errNotLocal for a
// connection that does not exist and errClosedEnd once the client closed.
func TestDiagAgreesWithProc(t *testing.T) {
	for _, fam := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(fam.network, func(t *testing.T) {
			_, servers := loopbackPairs(t, fam.network, fam.addr, 1)
			l, r := ends(servers[0])
			local, remote := unmapAP(l.AddrPort()), unmapAP(r.AddrPort())
			uid, err := diagPeerUID(remote, local)
			if errors.Is(err, errDiagUnavailable) {
				ci.Skip(t, err.Error())
			}
			if err != nil || uid != os.Geteuid() {
				t.Fatalf("sock_diag: uid %d, %v; want %d", uid, err, os.Geteuid())
			}
			if puid, err := procPeerUID(local, remote); err != nil || puid != uid {
				t.Fatalf("/proc/net/tcp: uid %d, %v; sock_diag said %d", puid, err, uid)
			}
			gone := netip.AddrPortFrom(remote.Addr(), remote.Port()^0x5a5a)
			if _, err := diagPeerUID(gone, local); !errors.Is(err, errNotLocal) {
				t.Fatalf("a connection that does not exist: %v, want errNotLocal", err)
			}
		})
	}
}

// TestOwnerCheckUnderManyConnections is the attack on the owner check: a
// local user holds thousands of connections open to the daemon's loopback
// doors, which made every accept read a /proc/net/tcp line for each. The
// check must still name the right owner, by one sock_diag lookup that does
// not read the table.
func TestOwnerCheckUnderManyConnections(t *testing.T) {
	const held = 3000
	_, servers := loopbackPairs(t, "tcp4", "127.0.0.1:0", held)
	for _, i := range []int{0, held / 2, held - 1} {
		l, r := ends(servers[i])
		uid, err := diagPeerUID(unmapAP(r.AddrPort()), unmapAP(l.AddrPort()))
		if errors.Is(err, errDiagUnavailable) {
			ci.Skip(t, err.Error())
		}
		if err != nil || uid != os.Geteuid() {
			t.Fatalf("connection %d of %d: uid %d, %v; want %d", i, held, uid, err, os.Geteuid())
		}
		if err := checkOwner(servers[i], os.Geteuid()); err != nil {
			t.Fatalf("connection %d of %d refused: %v", i, held, err)
		}
	}
}

// BenchmarkPeerUID compares the two lookups with few and many connections
// open on the host: sock_diag's cost does not grow with them.
func BenchmarkPeerUID(b *testing.B) {
	for _, n := range []int{10, 3000} {
		_, servers := loopbackPairs(b, "tcp4", "127.0.0.1:0", n)
		l, r := ends(servers[n/2])
		local, remote := unmapAP(l.AddrPort()), unmapAP(r.AddrPort())
		for _, m := range []struct {
			name string
			f    func() (int, error)
		}{
			{"sock_diag", func() (int, error) { return diagPeerUID(remote, local) }},
			{"proc", func() (int, error) { return procPeerUID(local, remote) }},
		} {
			b.Run(m.name+"/"+strconv.Itoa(n), func(b *testing.B) {
				for b.Loop() {
					if _, err := m.f(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// FuzzParseDiagAnswer feeds the sock_diag answer decoder arbitrary bytes:
// it must not panic, and it names an owner only for a whole inet_diag_msg
// with a live inode.
func FuzzParseDiagAnswer(f *testing.F) {
	msg := make([]byte, nlmsgHdrLen+inetDiagMsgLen)
	binary.NativeEndian.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint32(msg[len(msg)-8:], 1000)
	binary.NativeEndian.PutUint32(msg[len(msg)-4:], 42)
	errMsg := make([]byte, nlmsgHdrLen+4)
	binary.NativeEndian.PutUint16(errMsg[4:], unix.NLMSG_ERROR)
	binary.NativeEndian.PutUint32(errMsg[nlmsgHdrLen:], uint32(0x100000000-int64(unix.ENOENT)))
	f.Add(msg)
	f.Add(errMsg)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		uid, err := parseDiagAnswer(b)
		if err == nil && (len(b) < nlmsgHdrLen+inetDiagMsgLen || binary.NativeEndian.Uint32(b[nlmsgHdrLen+inetDiagMsgLen-4:]) == 0) {
			t.Fatalf("uid %d from %d bytes without a live inet_diag_msg", uid, len(b))
		}
	})
}

// TestDiagIgnoresListener: sock_diag's exact lookup falls back to a
// listening socket on the address a connection claims to come from once
// the connecting socket is gone (reset, so no time-wait entry). Such a
// listener is not the other end of anything: a local user whose reset
// connection came from the port a listener of the daemon's user takes
// afterwards must get errNotLocal, not that user's uid. Also for /proc.
func TestDiagIgnoresListener(t *testing.T) {
	for _, fam := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(fam.network, func(t *testing.T) {
			// daemon stands for the daemon's end; nothing is connected
			// to it from other's address.
			daemon, err := net.Listen(fam.network, fam.addr)
			if err != nil {
				ci.Skip(t, err.Error())
			}
			defer daemon.Close()
			other, err := net.Listen(fam.network, fam.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			local := unmapAP(daemon.Addr().(*net.TCPAddr).AddrPort())
			remote := unmapAP(other.Addr().(*net.TCPAddr).AddrPort())
			uid, err := diagPeerUID(remote, local)
			if errors.Is(err, errDiagUnavailable) {
				ci.Skip(t, err.Error())
			}
			if !errors.Is(err, errNotLocal) {
				t.Fatalf("sock_diag for a connection from a listener's address: uid %d, %v; want errNotLocal", uid, err)
			}
			if uid, err := procPeerUID(local, remote); !errors.Is(err, errNotLocal) {
				t.Fatalf("/proc for a connection from a listener's address: uid %d, %v; want errNotLocal", uid, err)
			}
		})
	}
}
