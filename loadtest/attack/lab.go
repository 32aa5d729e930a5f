package attack

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keymesh/keymesh/internal/natlab"
)

// The lab's addresses. Everything stays inside namespaces the lab makes:
//
//	srv  203.0.113.10/24 (+ .11 for the RFC 5780 alternate), default via rtr
//	leg  100.64.1.2/30; owns 100.65.0.0/16 (a local route: every address
//	     is its own), one per legitimate peer
//	bad  100.64.2.2/30; owns 198.51.100.0/24 (local route: sockets of a
//	     botnet) and receives, then silently drops, everything sent to
//	     100.96.0.0/12 (the spoofed sources)
//	rtr  routes between them
var (
	srvAddr    = netip.MustParseAddr("203.0.113.10")
	srvAltAddr = netip.MustParseAddr("203.0.113.11")
	legNet     = netip.MustParsePrefix("100.65.0.0/16")
	botNet     = netip.MustParsePrefix("198.51.100.0/24")
	spoofNet   = netip.MustParsePrefix("100.96.0.0/12")
	// internalAddr and metadataAddr live on the server namespace's
	// loopback only.
	internalAddr = netip.MustParseAddr("10.9.9.9")
	metadataAddr = netip.MustParseAddr("169.254.169.254")
)

// netnsDir is where `ip netns add` puts named namespaces.
const netnsDir = "/var/run/netns"

// Lab is the attack lab: four network namespaces (servers, legitimate
// peers, attacker, router). Close removes them and every process in them.
type Lab struct {
	Prefix             string
	Srv, Leg, Bad, Rtr string // namespace names
	ipPath             string
	made               []string
}

// NewLab makes the lab's namespaces, links and routes. prefix names them
// (lowercase letters and digits, at most 8); empty picks a random one.
func NewLab(ctx context.Context, prefix string) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("attack: the lab makes network namespaces: run as root")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"} {
			if _, serr := os.Stat(p); serr == nil {
				ip, err = p, nil
				break
			}
		}
		if err != nil {
			return nil, errors.New("attack: the ip command (iproute2) is not installed")
		}
	}
	if prefix == "" {
		var b [3]byte
		_, _ = rand.Read(b[:])
		prefix = fmt.Sprintf("atk%x", b)
	}
	l := &Lab{Prefix: prefix, Srv: prefix + "-srv", Leg: prefix + "-leg", Bad: prefix + "-bad", Rtr: prefix + "-rtr", ipPath: ip}
	if err := l.build(ctx); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

func (l *Lab) build(ctx context.Context) error {
	for _, ns := range []string{l.Rtr, l.Srv, l.Leg, l.Bad} {
		if err := l.ip(ctx, "netns", "add", ns); err != nil {
			return err
		}
		l.made = append(l.made, ns)
		if err := l.in(ctx, ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	links := []struct {
		ns, dev, rdev, addr, raddr string
	}{
		{l.Srv, "eth0", "srv", srvAddr.String() + "/24", "203.0.113.1/24"},
		{l.Leg, "eth0", "leg", "100.64.1.2/30", "100.64.1.1/30"},
		{l.Bad, "eth0", "bad", "100.64.2.2/30", "100.64.2.1/30"},
	}
	for _, k := range links {
		if err := l.ip(ctx, "link", "add", k.rdev, "netns", l.Rtr, "type", "veth", "peer", "name", k.dev, "netns", k.ns); err != nil {
			return err
		}
		if err := l.in(ctx, k.ns, "addr", "add", k.addr, "dev", k.dev); err != nil {
			return err
		}
		if err := l.in(ctx, l.Rtr, "addr", "add", k.raddr, "dev", k.rdev); err != nil {
			return err
		}
		for _, c := range [][]string{{k.ns, k.dev}, {l.Rtr, k.rdev}} {
			if err := l.in(ctx, c[0], "link", "set", c[1], "up"); err != nil {
				return err
			}
		}
	}
	steps := [][]string{
		{l.Srv, "addr", "add", srvAltAddr.String() + "/24", "dev", "eth0"},
		{l.Srv, "route", "add", "default", "via", "203.0.113.1"},
		// An "internal network" and a "metadata service" on the server
		// host itself: destinations a relay must refuse to reach.
		{l.Srv, "addr", "add", internalAddr.String() + "/32", "dev", "lo"},
		{l.Srv, "addr", "add", metadataAddr.String() + "/32", "dev", "lo"},
		{l.Leg, "route", "add", "default", "via", "100.64.1.1"},
		{l.Leg, "route", "add", "local", legNet.String(), "dev", "lo"},
		{l.Bad, "route", "add", "default", "via", "100.64.2.1"},
		{l.Bad, "route", "add", "local", botNet.String(), "dev", "lo"},
		{l.Bad, "route", "add", "blackhole", spoofNet.String()},
		{l.Rtr, "route", "add", legNet.String(), "via", "100.64.1.2"},
		{l.Rtr, "route", "add", botNet.String(), "via", "100.64.2.2"},
		{l.Rtr, "route", "add", spoofNet.String(), "via", "100.64.2.2"},
	}
	for _, s := range steps {
		if err := l.in(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	// The router forwards; the attacker "forwards" too, so that what the
	// servers send to spoofed sources meets the blackhole route and is
	// dropped without an ICMP error. No namespace filters by source.
	for _, ns := range []string{l.Rtr, l.Bad} {
		if err := sysctl(ns, "ipv4/ip_forward", "1"); err != nil {
			return err
		}
	}
	for _, ns := range []string{l.Rtr, l.Srv, l.Leg, l.Bad} {
		if err := sysctl(ns, "ipv4/conf/all/rp_filter", "0", "ipv4/conf/default/rp_filter", "0",
			"core/somaxconn", "4096"); err != nil {
			return err
		}
	}
	for _, d := range []string{"srv", "leg", "bad"} {
		if err := sysctl(l.Rtr, "ipv4/conf/"+d+"/rp_filter", "0"); err != nil {
			return err
		}
	}
	// Room for the servers' sockets and the attacker's floods.
	for _, ns := range []string{l.Srv, l.Leg, l.Bad} {
		_ = sysctl(ns, "ipv4/ip_local_port_range", "10000 65000")
	}
	return nil
}

// ip runs the ip command.
func (l *Lab) ip(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, l.ipPath, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("attack: ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// in runs `ip` inside namespace ns.
func (l *Lab) in(ctx context.Context, ns string, args ...string) error {
	return l.ip(ctx, append([]string{"-n", ns}, args...)...)
}

// Command returns a command that runs name inside namespace ns.
func (l *Lab) Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, l.ipPath, append([]string{"netns", "exec", ns, name}, args...)...)
}

// Close kills every process left in the lab's namespaces and deletes them.
// It is idempotent.
func (l *Lab) Close() error {
	var errs []error
	for i := len(l.made) - 1; i >= 0; i-- {
		ns := l.made[i]
		for _, pid := range netnsPIDs(ns) {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		if err := l.ip(context.Background(), "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	l.made = nil
	return errors.Join(errs...)
}

// Sweep removes the namespaces a crashed run with this prefix left.
func Sweep(prefix string) error {
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil
	}
	l := &Lab{ipPath: "ip"}
	if p, err := exec.LookPath("ip"); err == nil {
		l.ipPath = p
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			l.made = append(l.made, e.Name())
		}
	}
	return l.Close()
}

// netnsPIDs returns the processes (other than this one) in namespace ns.
func netnsPIDs(ns string) []int {
	var want unix.Stat_t
	if unix.Stat(filepath.Join(netnsDir, ns), &want) != nil {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
			pids = append(pids, pid)
		}
	}
	return pids
}

// sysctl writes net sysctls (keys relative to /proc/sys/net) inside ns.
func sysctl(ns string, kv ...string) error {
	return natlab.InNetns(ns, func() error {
		for i := 0; i+1 < len(kv); i += 2 {
			if err := os.WriteFile("/proc/sys/net/"+kv[i], []byte(kv[i+1]), 0o644); err != nil {
				return fmt.Errorf("attack: sysctl net.%s in %s: %w", strings.ReplaceAll(kv[i], "/", "."), ns, err)
			}
		}
		return nil
	})
}

// listenUDP opens a UDP socket bound to laddr inside ns.
func listenUDP(ns string, laddr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := natlab.InNetns(ns, func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(laddr))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attack: udp socket on %s in %s: %w", laddr, ns, err)
	}
	return c, nil
}

// dialTCP connects from ns (from laddr when it is valid) to raddr.
func dialTCP(ctx context.Context, ns string, laddr netip.Addr, raddr netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := natlab.InNetns(ns, func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		if laddr.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(laddr, 0))
		}
		var err error
		c, err = d.DialContext(ctx, "tcp4", raddr.String())
		return err
	})
	return c, err
}

// linkStats are a namespace's eth0 counters.
type linkStats struct {
	rxBytes, rxPackets, txBytes, txPackets uint64
}

// stats reads eth0's counters in ns (from /proc/net/dev as ns sees it).
func stats(ns string) (linkStats, error) {
	var s linkStats
	err := natlab.InNetns(ns, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/dev")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
			if !ok || name != "eth0" {
				continue
			}
			f := strings.Fields(rest)
			if len(f) < 10 {
				return fmt.Errorf("attack: /proc/net/dev: %q", line)
			}
			n := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
			s = linkStats{rxBytes: n(0), rxPackets: n(1), txBytes: n(8), txPackets: n(9)}
			return nil
		}
		return errors.New("attack: no eth0 in /proc/net/dev")
	})
	return s, err
}

// udpRcvbufErrors reads the UDP datagrams the kernel of ns dropped because
// a socket's receive buffer was full (/proc/net/snmp, Udp RcvbufErrors).
func udpRcvbufErrors(ns string) (uint64, error) {
	var n uint64
	err := natlab.InNetns(ns, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var names []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "Udp:" {
				continue
			}
			if names == nil {
				names = f
				continue
			}
			for i, name := range names {
				if name == "RcvbufErrors" && i < len(f) {
					n, err = strconv.ParseUint(f[i], 10, 64)
					return err
				}
			}
		}
		return errors.New("attack: no Udp RcvbufErrors in /proc/net/snmp")
	})
	return n, err
}
