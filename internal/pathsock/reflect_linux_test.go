package pathsock

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keymesh/keymesh/internal/nat"
	"github.com/keymesh/keymesh/internal/testutil/ci"
	"github.com/keymesh/keymesh/internal/wire"
)

// connectSize is the size of the Connect that makes the rendezvous send a
// Punch naming 16 candidates (issue 10, item 6).
const connectSize = 155

// reflNS is a network namespace whose routes lead only to dummy devices:
// whatever a defence lets through is counted there and goes nowhere else.
type reflNS struct {
	t    *testing.T
	name string
}

func needNetAdmin(t *testing.T) {
	t.Helper()
	ci.NeedRoot(t, "network namespaces")
}

func newReflNS(t *testing.T) *reflNS {
	t.Helper()
	needNetAdmin(t)
	var b [4]byte
	rand.Read(b[:])
	ns := &reflNS{t: t, name: "kmrefl-" + hex.EncodeToString(b[:])}
	ns.ip("netns", "add", ns.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns.name).Run() })
	// No IPv6: its neighbour discovery would add to the counters.
	for _, k := range []string{"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"} {
		if out, err := exec.Command("ip", "netns", "exec", ns.name, "sysctl", "-qw", k).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			t.Fatalf("sysctl %s: %v: %s", k, err, out)
		}
	}
	ns.in("link", "set", "lo", "up")
	return ns
}

func (ns *reflNS) ip(args ...string) {
	ns.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		ns.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func (ns *reflNS) in(args ...string) {
	ns.t.Helper()
	ns.ip(append([]string{"-n", ns.name}, args...)...)
}

// dummy adds a device that swallows what it is sent: one end of a veth
// pair without ARP (so every packet leaves at once) whose other end, in
// the same namespace, has no address. It gets the given addresses
// (prefixes) and routes.
func (ns *reflNS) dummy(dev string, addrs []string, routes ...string) {
	ns.t.Helper()
	ns.in("link", "add", dev, "type", "veth", "peer", "name", dev+"x")
	for _, a := range addrs {
		ns.in("addr", "add", a, "dev", dev)
	}
	ns.in("link", "set", dev, "arp", "off")
	ns.in("link", "set", dev+"x", "up")
	ns.in("link", "set", dev, "up")
	for _, r := range routes {
		ns.in("route", "add", r, "dev", dev)
	}
}

// tx is what dev sent so far: bytes and packets.
func (ns *reflNS) tx(dev string) (bytes, packets uint64) {
	ns.t.Helper()
	out, err := exec.Command("ip", "-n", ns.name, "-s", "-j", "link", "show", "dev", dev).Output()
	if err != nil {
		ns.t.Fatalf("ip link show %s: %v", dev, err)
	}
	var links []struct {
		Stats struct {
			TX struct {
				Bytes   uint64 `json:"bytes"`
				Packets uint64 `json:"packets"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		ns.t.Fatalf("ip link show %s: %v: %s", dev, err, out)
	}
	return links[0].Stats.TX.Bytes, links[0].Stats.TX.Packets
}

func (ns *reflNS) txBytes(dev string) uint64 { b, _ := ns.tx(dev); return b }

// listenUDP opens a UDP socket inside the namespace.
func (ns *reflNS) listenUDP(addr string) *net.UDPConn {
	ns.t.Helper()
	type res struct {
		c   *net.UDPConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns.name)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		ua, _ := net.ResolveUDPAddr("udp", addr)
		c, lerr := net.ListenUDP("udp", ua)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{err: fmt.Errorf("setns back: %w", err)} // the thread dies locked
			return
		}
		runtime.UnlockOSThread()
		ch <- res{c, lerr}
	}()
	r := <-ch
	if r.err != nil {
		ns.t.Fatal(r.err)
	}
	ns.t.Cleanup(func() { r.c.Close() })
	return r.c
}

// fakeClock is a settable clock for the layer.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// TestPeerIsNotAReflector is issue 10's item 6: one Punch (what a 155-byte
// Connect to an --allow-any peer buys) names 16 addresses the attacker
// chose. The victim lives in a namespace whose routes lead to dummy
// devices, one per destination, and the punch runs on an injected clock.
// Public unproven candidates get at most candBudget probes each and
// peerBudget together; loopback, foreign private and CGNAT, link-local
// candidates get nothing; the victim's own LAN is still probed (peers
// behind one NAT); repeating the Punch does not restart the schedule.
func TestPeerIsNotAReflector(t *testing.T) {
	ns := newReflNS(t)
	ns.dummy("wan", []string{"203.0.113.10/24"})
	ns.dummy("lan", []string{"100.64.7.1/24"})
	ns.dummy("priv", nil, "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16")
	const public = 12
	var cands []netip.AddrPort
	for i := 1; i <= public; i++ {
		dev := fmt.Sprintf("d%d", i)
		ns.dummy(dev, nil, fmt.Sprintf("198.51.100.%d/32", i))
		cands = append(cands, netip.MustParseAddrPort(fmt.Sprintf("198.51.100.%d:7", i)))
	}
	cands = append(cands,
		netip.MustParseAddrPort("127.0.0.1:9"),        // loopback: a local service
		netip.MustParseAddrPort("10.0.0.1:6379"),      // a private host (Redis in the VPC)
		netip.MustParseAddrPort("100.64.99.1:9"),      // someone else's CGNAT LAN
		netip.MustParseAddrPort("169.254.169.254:80"), // the metadata service
	)
	own := netip.MustParseAddrPort("100.64.7.5:9") // a host on the victim's LAN
	conn := ns.listenUDP("0.0.0.0:0")
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	victim, err := newSock(Config{
		Identity: newIdentity(t),
		Conn:     conn,
		Now:      clock.now,
		Interfaces: func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("100.64.7.1")}, nil
		},
		LocalPrefixes: func() ([]netip.Prefix, error) {
			return []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("100.64.7.0/24")}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { victim.Close() })
	attacker := newIdentity(t).ID()
	punch := wire.PeerInfo{ID: attacker, Reflexive: cands[0], Candidates: append(cands[1:], own)}
	if len(punch.Candidates) != wire.MaxCandidates {
		t.Fatalf("%d candidates, want the most a Punch carries (%d)", len(punch.Candidates), wire.MaxCandidates)
	}
	// publicTx is what went to the public candidates: bytes, packets, and
	// the most packets to one.
	publicTx := func() (bytes, packets, most uint64) {
		for i := 1; i <= public; i++ {
			b, p := ns.tx(fmt.Sprintf("d%d", i))
			bytes, packets, most = bytes+b, packets+p, max(most, p)
		}
		return bytes, packets, most
	}
	// run advances the clock by d in maintenance ticks, punching again
	// every `again` when set.
	run := func(d, again time.Duration) {
		end := clock.t.Add(d)
		next := clock.t.Add(again)
		for clock.t.Before(end) {
			clock.t = clock.t.Add(maintenanceTick)
			if again > 0 && !clock.t.Before(next) {
				next = next.Add(again)
				if err := victim.AddPeer(punch, clock.t); err != nil {
					t.Fatal(err)
				}
			}
			victim.tickPeers(clock.t)
		}
	}
	if err := victim.AddPeer(punch, clock.t); err != nil {
		t.Fatal(err)
	}
	// refill is how many probes the peer's bucket regains in d.
	refill := func(d time.Duration) uint64 { return uint64(peerBudget*d/punchWindow) + 1 }
	first := nat.PunchDuration + time.Second
	run(first, 0)
	total, probes, most := publicTx()
	t.Logf("one Punch: %d probes, %d bytes (IP and UDP included) to %d public addresses chosen by the attacker (most to one: %d probes); amplification x%.1f of a %d-byte Connect",
		probes, total, public, most, float64(total)/connectSize, connectSize)
	if most > candBudget {
		t.Errorf("one unproven address got %d probes, want at most %d", most, candBudget)
	}
	if limit := peerBudget + refill(first); probes > limit {
		t.Errorf("one Punch sent %d probes to unproven addresses, want at most %d", probes, limit)
	}
	if lo := ns.txBytes("lo"); lo != 0 {
		t.Errorf("%d bytes to a loopback candidate", lo)
	}
	if p := ns.txBytes("priv"); p != 0 {
		t.Errorf("%d bytes to foreign private, CGNAT or link-local candidates", p)
	}
	if ns.txBytes("lan") == 0 {
		t.Errorf("the candidate on the victim's own LAN was not probed: peers behind one NAT would not find each other")
	}
	// The same Punch, repeated every 500 ms for the rest of the window:
	// no new schedule, nothing beyond what the peer's bucket refills.
	_, before, _ := publicTx()
	rest := punchWindow - first
	run(rest, 500*time.Millisecond)
	_, after, _ := publicTx()
	t.Logf("%d repeated Punches over %v: %d more probes", int(rest/(500*time.Millisecond)), rest, after-before)
	if limit := refill(rest); after-before > limit {
		t.Errorf("repeated Punches sent %d more probes, want at most %d", after-before, limit)
	}
}

// TestReflectionGlobalCap: many identities (fresh keys cost nothing), each
// naming three public addresses of its own, cannot make a peer probe
// unproven addresses faster than the global budget (unprovenBurst, then
// unprovenRate a second) allows.
func TestReflectionGlobalCap(t *testing.T) {
	ns := newReflNS(t)
	ns.dummy("wan", []string{"203.0.113.10/24"}, "198.51.100.0/24", "192.0.2.0/24")
	conn := ns.listenUDP("0.0.0.0:0")
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	victim, err := newSock(Config{
		Identity:      newIdentity(t),
		Conn:          conn,
		Now:           clock.now,
		Interfaces:    func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("203.0.113.10")}, nil },
		LocalPrefixes: func() ([]netip.Prefix, error) { return []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { victim.Close() })
	const identities = 100
	for i := range identities {
		var cands []netip.AddrPort
		for j := range 3 {
			n := i*3 + j
			cands = append(cands, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(n % 250)}), uint16(1000+n/250)))
		}
		// A reflexive address of its own (the rendezvous saw it there),
		// and three named ones.
		info := wire.PeerInfo{ID: newIdentity(t).ID(), Reflexive: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 7), Candidates: cands}
		if err := victim.AddPeer(info, clock.t); err != nil {
			t.Fatal(err)
		}
	}
	const d = time.Second
	for end := clock.t.Add(d); clock.t.Before(end); {
		clock.t = clock.t.Add(maintenanceTick)
		victim.tickPeers(clock.t)
	}
	_, packets := ns.tx("wan")
	limit := uint64(unprovenBurst + unprovenRate*d/time.Second)
	t.Logf("%d identities, %d unproven addresses, %v: %d probes (the global budget allows %d)", identities, identities*4, d, packets, limit)
	if packets > limit {
		t.Errorf("%d probes to unproven addresses in %v, want at most %d", packets, d, limit)
	}
}
