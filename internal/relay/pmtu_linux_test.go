package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/testutil/ci"
)

// inFreshNetns runs fn on a thread that has left for a new network
// namespace, with loopback up and cmds (ip arguments) run in it, and puts
// the thread back. Sockets fn opens stay in the namespace, which goes away
// with its last socket.
func inFreshNetns(cmds [][]string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		ferr := func() error {
			for _, c := range append([][]string{{"link", "set", "lo", "up"}}, cmds...) {
				if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
					return fmt.Errorf("ip %v: %w: %s", c, err, out)
				}
			}
			return fn()
		}()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, err) // the thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// TestSegmentedRunToSmallPathMTU: a peer whose path MTU at the relay is
// below a run's datagram size (a tunnel, or an ICMP "fragmentation needed"
// anyone can spoof towards the relay for the peer's address) still gets the
// run: the kernel refuses a segmented send larger than the path MTU with
// EMSGSIZE, where the same datagrams sent one by one leave fragmented. The
// relay dropped every such run.
func TestSegmentedRunToSmallPathMTU(t *testing.T) {
	if os.Geteuid() != 0 {
		ci.Skipf(t, "needs root for a network namespace")
	}
	var rc, ac, bc *net.UDPConn
	err := inFreshNetns([][]string{{"route", "replace", "local", "127.0.0.2", "dev", "lo", "table", "local", "mtu", "lock", "600"}}, func() error {
		var err error
		listen := func(a string) *net.UDPConn {
			var c *net.UDPConn
			if err == nil {
				c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(a)))
			}
			return c
		}
		rc, ac, bc = listen("127.0.0.1:0"), listen("127.0.0.1:0"), listen("127.0.0.2:0")
		return err
	})
	for _, c := range []*net.UDPConn{ac, bc} {
		if c != nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	if err != nil {
		if rc != nil {
			rc.Close()
		}
		ci.Skipf(t, "network namespace: %v", err)
	}
	peerOf := func(c *net.UDPConn) *peer {
		id, err := crypto.GenerateIdentity(nil)
		if err != nil {
			t.Fatal(err)
		}
		return &peer{id: id, conn: c}
	}
	admin := obs.NewAdmin("relay", nil)
	srv, err := New(Config{Keys: mustKeys(t, 1, map[byte][]byte{1: testKey(1)}, nil), Registerer: admin.Registry})
	if err != nil {
		rc.Close()
		t.Fatal(err)
	}
	r := serveOn(t, srv, admin, rc, "batch")
	a, b := peerOf(ac), peerOf(bc)
	ticket := b.bind(t, r.addr).Ticket

	const n = 8
	var frames [][]byte
	var labels []string
	for i := range n {
		labels = append(labels, fmt.Sprintf("small path %d", i))
		frames = append(frames, sameSize(ticket, a, labels[i]))
	}
	sendRun(t, a, r.addr, frames)
	got, _ := recvFrames(t, b, n)
	checkPayloads(t, got, a, labels)
}
