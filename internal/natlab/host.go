package natlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"sync"
)

// Host is a machine in the lab: a network namespace with one interface
// (eth0). A server or a public site's host sits on the public segment; a
// NATed host sits on its site's LAN.
//
// The address fields describe the host as built; SetAddr changes Addr,
// Addrs and Prefix, so callers that read them while another goroutine calls
// SetAddr must synchronise themselves (or use CurrentAddr).
type Host struct {
	// Name is the name given to AddServer, or for a site's hosts the site
	// name (same-nat: "<site>-1" and "<site>-2").
	Name string
	// Netns is the network namespace's name, for `ip netns exec`.
	Netns string
	// Dev is the host's interface inside the namespace ("eth0").
	Dev string
	// Addr is the host's own (primary) address: a LAN address behind a
	// NAT, a public address on the public segment.
	Addr netip.Addr
	// Addrs lists all its addresses, Addr first. Servers have two: one in
	// 203.0.113.0/24 and one in 198.51.100.0/24 (for an RFC 5780
	// alternate address).
	Addrs []netip.Addr
	// Prefix is Addr with the length of its on-link network: the LAN's /24
	// behind a NAT, /32 on the public segment (everything goes through the
	// internet router).
	Prefix netip.Prefix
	// Gateway is the host's default gateway.
	Gateway netip.Addr
	// Site is the site the host belongs to, nil for servers.
	Site *Site

	lab *Lab
	mu  sync.Mutex // serialises SetAddr and guards the address fields
}

// CurrentAddr returns Addr, safely against a concurrent SetAddr.
func (h *Host) CurrentAddr() netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.Addr
}

// String returns the host's name and address.
func (h *Host) String() string { return fmt.Sprintf("%s(%s)", h.Name, h.CurrentAddr()) }

// Command returns a command that runs program name with args inside the
// host's namespace, through `ip netns exec` (which execs the program: the
// process the Cmd starts and kills is the program itself). The Cmd is
// otherwise plain: set Stdout, Stderr, Stdin, Env, Dir as usual; a nil Env
// inherits this process's environment, and name without a slash is looked
// up on the PATH of that environment. WaitDelay is set to 5 s so Wait
// returns even if a grandchild holds the output pipes; ctx kills the
// program (SIGKILL; set Cancel for a gentler signal). Lab.Close kills
// programs still running in the lab's namespaces.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return h.lab.nsCommand(ctx, h.Netns, name, args...)
}

// Run runs a program in the host's namespace and returns its combined
// output; the error includes the output.
func (h *Host) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return run(ctx, nil, h.lab.ip, append([]string{"netns", "exec", h.Netns, name}, args...)...)
}

// Do runs fn on an OS thread that has joined the host's namespace, and
// returns fn's error. Sockets fn opens belong to the namespace for their
// life and may be used from any goroutine afterwards. fn must be short and
// must not start goroutines that need the namespace (they run elsewhere).
func (h *Host) Do(fn func() error) error { return InNetns(h.Netns, fn) }

// ListenUDP opens a UDP socket inside the host's namespace, from this
// process. laddr may be the zero AddrPort (any address, any port) or have
// a zero address or port.
func (h *Host) ListenUDP(ctx context.Context, laddr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := h.Do(func() error {
		var lc net.ListenConfig
		pc, err := lc.ListenPacket(ctx, "udp4", addrString(laddr))
		if err != nil {
			return err
		}
		c = pc.(*net.UDPConn)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: listen udp %s in %s: %w", laddr, h.Name, err)
	}
	return c, nil
}

// ListenTCP opens a TCP listener inside the host's namespace.
func (h *Host) ListenTCP(ctx context.Context, laddr netip.AddrPort) (*net.TCPListener, error) {
	var ln *net.TCPListener
	err := h.Do(func() error {
		var lc net.ListenConfig
		l, err := lc.Listen(ctx, "tcp4", addrString(laddr))
		if err != nil {
			return err
		}
		ln = l.(*net.TCPListener)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: listen tcp %s in %s: %w", laddr, h.Name, err)
	}
	return ln, nil
}

// DialTCP connects from inside the host's namespace to raddr; ctx bounds
// the connect.
func (h *Host) DialTCP(ctx context.Context, raddr netip.AddrPort) (*net.TCPConn, error) {
	var c *net.TCPConn
	err := h.Do(func() error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp4", raddr.String())
		if err != nil {
			return err
		}
		c = conn.(*net.TCPConn)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: dial tcp %s from %s: %w", raddr, h.Name, err)
	}
	return c, nil
}

func addrString(ap netip.AddrPort) string {
	if !ap.Addr().IsValid() {
		return fmt.Sprintf(":%d", ap.Port())
	}
	return ap.String()
}
