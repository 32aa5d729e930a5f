package turnrelay

import (
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
