package rendezvous

import (
	"context"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// FuzzHandle feeds arbitrary datagrams to the server: it must not panic, and
// since no fuzzed input carries a valid cookie, no reply may be larger than
// its request (STUN excepted: its answer is bounded as documented in
// handleSTUN).
func FuzzHandle(f *testing.F) {
	fx := newFixture(f, func(c *Config) { c.RateLimit.PerSecond = -1 })
	a := fx.newPeer("203.0.113.5:40000")
	b := fx.newPeer("198.51.100.9:50000")
	// B is registered so that connects find someone.
	fx.register(b, wire.Register{AllowAny: true, Tickets: [][]byte{make([]byte, crypto.TicketSize)}})
	from := a.addr
	f.Add(fx.seal(a, &wire.Register{AllowAny: true}))
	f.Add(fx.seal(a, &wire.Register{Cookie: b.cookie, Candidates: []netip.AddrPort{netip.MustParseAddrPort("100.64.0.1:1")}}))
	f.Add(fx.seal(a, &wire.Connect{Target: b.id.ID()}))
	f.Add(fx.seal(a, &wire.Connect{TargetAddr: b.id.ID().OverlayAddr()}))
	f.Add(fx.seal(a, &wire.Probe{}))
	f.Add(fx.seal(a, &wire.Report{Initiator: true, Outcome: wire.OutcomeDirect, DirectMs: 100}))
	f.Add(fx.seal(a, &wire.Keepalive{Cookie: b.cookie}))
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw)
	f.Add([]byte{wire.TypeSealed, wire.Version})
	f.Add([]byte{wire.TypeSealed, wire.Version + 1, 0})
	f.Add(wire.AppendData(nil, 7, []byte("payload")))
	f.Add([]byte{})
	f.Add(strangerFrame())
	f.Add(fx.seal(a, &wire.Register{Cookie: fx.srv.cfg.Cookies.Make(netip.MustParseAddrPort("192.0.2.1:9"))}))
	f.Add(wire.SealFrame(nil, a.id.ID(), a.shared, wire.Message{Time: 1, Body: &wire.Register{}}))
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{0, 0, 0, 6}}).Raw)
	req, _ := fx.sealRequest(a, &wire.Register{AllowAny: true})
	f.Add(req)
	a.cookie = fx.srv.cfg.Cookies.Make(from)
	req, _ = fx.sealRequest(a, &wire.Connect{Target: b.id.ID()})
	f.Add(req) // a valid proof outside the box, no cookie inside
	a.cookie = crypto.Cookie{}
	stranger := strangerFrame()
	stranger[0], stranger[1] = wire.TypeRequest, wire.RequestVersion
	f.Add(stranger)
	f.Add([]byte{wire.TypeRequest, wire.RequestVersion})
	sc := newScratch()
	f.Fuzz(func(t *testing.T, pkt []byte) {
		out := fx.srv.handle(context.Background(), sc, from, pkt)
		for _, o := range out {
			if wire.Classify(pkt) == wire.KindSTUN {
				if len(o.b) > 44 {
					t.Fatalf("STUN answer of %d bytes", len(o.b))
				}
				continue
			}
			if len(o.b) > len(pkt) {
				t.Fatalf("%d-byte reply to a %d-byte request without a valid cookie", len(o.b), len(pkt))
			}
			if o.to != from {
				t.Fatalf("reply to %v, not the sender", o.to)
			}
		}
	})
}
