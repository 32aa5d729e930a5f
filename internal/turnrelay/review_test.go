package turnrelay

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/pion/stun/v4"
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
