package daemon

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// unixPeerUID is the uid of the process at the other end of c
// (SO_PEERCRED).
func unixPeerUID(c *net.UnixConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", serr)
	}
	return int(cred.Uid), nil
}

// tcpPeerUID finds the local socket at the other end of a TCP connection
// whose ends are local (ours) and remote, the socket whose own address is
// remote and whose peer is local, and returns its uid: from sock_diag (one
// hash lookup), or where the kernel has none from /proc/net/tcp or tcp6
// (a line per socket on the host). errNotLocal when there is none.
func tcpPeerUID(local, remote netip.AddrPort) (int, error) {
	local, remote = unmapAP(local), unmapAP(remote)
	uid, err := diagPeerUID(remote, local)
	if !errors.Is(err, errDiagUnavailable) {
		return uid, err
	}
	return procPeerUID(local, remote)
}

// procPeerUID is tcpPeerUID from /proc/net/tcp and tcp6.
func procPeerUID(local, remote netip.AddrPort) (int, error) {
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		uid, ok, err := scanTCPTable(f, remote, local)
		if err != nil {
			return 0, err
		}
		if ok {
			return uid, nil
		}
	}
	return 0, errNotLocal
}

func scanTCPTable(path string, wantLocal, wantRemote netip.AddrPort) (int, bool, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return 0, false, nil // no IPv6
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		uid, la, ra, ok := parseTCPLine(sc.Text())
		if ok && la == wantLocal && ra == wantRemote {
			if !ownedByProcess(sc.Text()) {
				// Closed by its process (an orphan or a time-wait entry,
				// listed with uid 0): nobody to vouch for the bytes it
				// left in our queue.
				return 0, false, errClosedEnd
			}
			return uid, true, nil
		}
	}
	return 0, false, sc.Err()
}

// parseTCPLine parses one line of /proc/net/tcp{,6}: "sl local rem st
// queues timer retransmits uid ...", addresses as hex address:port with
// the address in 32-bit words of host byte order.
func parseTCPLine(line string) (uid int, local, remote netip.AddrPort, ok bool) {
	f := strings.Fields(line)
	if len(f) < 8 {
		return 0, local, remote, false
	}
	local, ok1 := parseProcAddr(f[1])
	remote, ok2 := parseProcAddr(f[2])
	u, err := strconv.ParseUint(f[7], 10, 32)
	if !ok1 || !ok2 || err != nil {
		return 0, local, remote, false
	}
	return int(u), local, remote, true
}

// ownedByProcess reports whether a line of /proc/net/tcp{,6} is a socket
// a process still holds: its inode (the tenth field) is not 0.
func ownedByProcess(line string) bool {
	f := strings.Fields(line)
	return len(f) >= 10 && f[9] != "0"
}

func parseProcAddr(s string) (netip.AddrPort, bool) {
	hexAddr, hexPort, found := strings.Cut(s, ":")
	if !found {
		return netip.AddrPort{}, false
	}
	b, err := hex.DecodeString(hexAddr)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	// Each 32-bit word of the address is printed as a number read in host
	// byte order.
	for i := 0; i < len(b); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(b[i:]))
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), true
}

func unmapAP(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}
