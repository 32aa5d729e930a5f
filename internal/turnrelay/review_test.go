package turnrelay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/crypto"
)

// TestBindingRateHoldsForMessagesPionReadsLoosely is a reflection attack on
// the guard: pion's decoder accepts a STUN message with bytes after its
// declared length and ignores the two top bits of the type, where the
// guard's strict parser did not see a request at all, so a Binding request
// with one trailing byte (or with the top bit set) escaped the per-source
// Binding rate and earned a 40-byte answer for 21 bytes, without limit.
func TestBindingRateHoldsForMessagesPionReadsLoosely(t *testing.T) {
	variants := map[string]func([]byte) []byte{
		"trailing byte": func(b []byte) []byte { return append(b, 0) },
		"top bits set":  func(b []byte) []byte { b[0] |= 0x80; return b },
		"odd length":    func(b []byte) []byte { b[3] |= 1; return append(b, 0) },
	}
	for name, mangle := range variants {
		t.Run(name, func(t *testing.T) {
			c := guardedServer(t, "udp4", "127.0.0.1")
			answers := 0
			for range 3 * DefaultBindingBurst {
				req := mangle(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
				c.send(req)
				sent := sentinel()
				c.send(sent.Raw)
				for {
					b, err := c.read(5 * time.Second)
					if err != nil {
						t.Fatalf("no answer to the sentinel: %v", err)
					}
					if m := parseSTUN(b); m.ok && m.txid == sent.TransactionID {
						break
					}
					answers++
				}
			}
			if answers > DefaultBindingBurst {
				t.Errorf("%d Binding answers from one source with the clock stopped, burst %d", answers, DefaultBindingBurst)
			}
		})
	}
}

// TestTCPConnectionsPerSourceCapped is a resource attack on the TURN TCP
// port: a stranger opens connections and leaves them idle. pion gives each
// one a goroutine and a buffer for as long as it stays open, so one
// address could hold as many as it has ports, and a few addresses every
// file descriptor the relay has. A source holds at most
// DefaultMaxTCPConnsPerSource; the next one is closed at once, and closing
// one makes room again.
func TestTCPConnectionsPerSourceCapped(t *testing.T) {
	ts := startServer(t, 1, nil)
	binding := func(c *rawClient) error {
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		c.send(req.Raw)
		b, err := c.read(5 * time.Second)
		if err != nil {
			return err
		}
		if m := parseSTUN(b); !m.ok || m.txid != req.TransactionID {
			return fmt.Errorf("not the answer: %x", b)
		}
		return nil
	}
	var held []*rawClient
	for i := range DefaultMaxTCPConnsPerSource {
		c := dialRaw(t, "tcp4", ts.tcp, "", "")
		if err := binding(c); err != nil {
			t.Fatalf("connection %d within the cap: %v", i, err)
		}
		held = append(held, c)
	}
	over := dialRaw(t, "tcp4", ts.tcp, "", "")
	if b, err := over.read(5 * time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("connection %d from one source: read %x, %v; want it closed", DefaultMaxTCPConnsPerSource+1, b, err)
	}
	held[0].conn.Close()
	waitFor(t, "the closed connection's slot", func() bool {
		c := dialRaw(t, "tcp4", ts.tcp, "", "")
		defer c.conn.Close()
		return binding(c) == nil
	})
}

// TestTCPConnectionsCapped: beyond MaxTCPConns open connections in all, a
// new one is closed on accept, whatever its source.
func TestTCPConnectionsCapped(t *testing.T) {
	ts := startServer(t, 1, func(c *Config) { c.MaxTCPConns, c.MaxTCPConnsPerSource = 2, -1 })
	for range 2 {
		c := dialRaw(t, "tcp4", ts.tcp, "", "")
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		c.send(req.Raw)
		if _, err := c.read(5 * time.Second); err != nil {
			t.Fatalf("a connection within the cap: %v", err)
		}
	}
	over := dialRaw(t, "tcp4", ts.tcp, "", "")
	if b, err := over.read(5 * time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("the third connection: read %x, %v; want it closed", b, err)
	}
	if got := value(t, ts.metrics.tcpRefusals); got != 1 {
		t.Errorf("keymesh_turn_tcp_refusals_total %v, want 1", got)
	}
}

// TestInboundPeerConnectionsCapped is a resource attack through an RFC
// 6062 TCP allocation: its owner permits its own address and opens
// connections to the relayed port. pion keeps each one it has not been
// asked to bind for 30 seconds and checks every new one against all the
// allocation's others under the lock all allocations share, so one
// allocation could hold the relay's descriptors and that lock. An
// allocation holds at most DefaultMaxPeerConns peer connections; one
// beyond is closed on accept.
func TestInboundPeerConnectionsCapped(t *testing.T) {
	ts := startServer(t, 1, nil)
	u, p := crypto.TURNCredentials(testSecret, "mallory-inbound", time.Hour, time.Now())
	c := dialRaw(t, "tcp", ts.tcp, u, p)
	relayed := c.allocateRaw(6)
	if r := c.request(stun.MethodCreatePermission, peerAddr(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})); r.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("CreatePermission: %v (code %d)", r.Type, errCode(r))
	}
	relayedTCP := &net.TCPAddr{IP: relayed.IP, Port: relayed.Port}
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	// Each accepted connection is announced to the client with a
	// ConnectionAttempt; count them.
	attempts := 0
	for i := range DefaultMaxPeerConns + 1 {
		pc, err := net.DialTCP("tcp4", nil, relayedTCP)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, pc)
		if i < DefaultMaxPeerConns {
			b, err := c.read(5 * time.Second)
			if err != nil {
				t.Fatalf("no ConnectionAttempt for connection %d: %v", i, err)
			}
			if m := parseSTUN(b); m.ok && m.method() == 0x00c && m.class() == classIndication {
				attempts++
			}
		}
	}
	if attempts != DefaultMaxPeerConns {
		t.Fatalf("%d ConnectionAttempts for %d connections", attempts, DefaultMaxPeerConns)
	}
	last := conns[len(conns)-1]
	last.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := last.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("connection %d to one allocation: read %d, %v; want it closed", DefaultMaxPeerConns+1, n, err)
	}
}
