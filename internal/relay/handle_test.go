package relay

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// handleFixture is a Server and worker with fixed keys and clock, for the
// pure handler.
type handleFixture struct {
	w     *worker
	keys  *crypto.TicketKeys
	now   time.Time
	id    *crypto.Identity
	dst   netip.AddrPort
	send  []byte // a valid RelaySend to dst
	bind  []byte // a valid RelayBind from id at testSrc, with its cookie
	reply []byte
}

func newHandleFixture(tb testing.TB, rl RateLimit) *handleFixture {
	tb.Helper()
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	keys := mustKeys(tb, 1, map[byte][]byte{1: testKey(1)}, clock)
	srv, err := New(Config{Keys: keys, Now: clock, RateLimit: rl})
	if err != nil {
		tb.Fatal(err)
	}
	id, err := crypto.IdentityFromSeed(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	dst := netip.MustParseAddrPort("127.0.0.1:4000")
	ticket := keys.Seal(nil, crypto.Ticket{Addr: dst, ID: id.ID(), Expiry: now.Add(time.Minute)})
	f := &handleFixture{
		w: srv.newWorker(), keys: keys, now: now, id: id, dst: dst,
		send:  wire.AppendRelaySend(nil, ticket, 42, bytes.Repeat([]byte{0xab}, 1200)),
		reply: make([]byte, 0, wire.RelayBoundLen),
	}
	f.bind = wire.AppendRelayBind(nil, id, now, f.cookie(tb, id, testSrc, now))
	return f
}

// cookie asks the handler for src's cookie with a cookieless bind from id,
// as a peer's first bind does.
func (f *handleFixture) cookie(tb testing.TB, id *crypto.Identity, src netip.AddrPort, now time.Time) crypto.Cookie {
	tb.Helper()
	act, out, dst := f.w.handle(wire.AppendRelayBind(nil, id, now, crypto.Cookie{}), src, now, now.UnixNano(), f.reply)
	if act != actChallenge || dst != src {
		tb.Fatalf("cookieless bind: action %v to %v, want a challenge to %v", act, dst, src)
	}
	c, err := wire.ParseRelayChallenge(out)
	if err != nil {
		tb.Fatal(err)
	}
	return c.Cookie
}

var testSrc = netip.MustParseAddrPort("127.0.0.1:5000")

func TestHandleForwardDoesNotAllocate(t *testing.T) {
	f := newHandleFixture(t, RateLimit{})
	pkt := make([]byte, len(f.send))
	allocs := testing.AllocsPerRun(1000, func() {
		copy(pkt, f.send)
		act, out, dst := f.w.handle(pkt, testSrc, f.now, f.now.UnixNano(), f.reply)
		if act != actForward || dst != f.dst || len(out) != len(f.send)-crypto.TicketSize {
			t.Fatalf("handle: %v %v %d", act, dst, len(out))
		}
	})
	if allocs != 0 {
		t.Fatalf("forwarding allocates %.1f times per packet, want 0", allocs)
	}
}

func TestHandleBindReplyIsSmaller(t *testing.T) {
	f := newHandleFixture(t, RateLimit{})
	act, out, dst := f.w.handle(f.bind, testSrc, f.now, f.now.UnixNano(), f.reply)
	if act != actReply || dst != testSrc {
		t.Fatalf("bind: action %v to %v", act, dst)
	}
	if len(out) > len(f.bind) {
		t.Fatalf("reply of %d bytes to a bind of %d", len(out), len(f.bind))
	}
	bd, err := wire.ParseRelayBound(out)
	if err != nil || bd.Observed != testSrc {
		t.Fatalf("reply: %v, observed %v", err, bd.Observed)
	}
	tk, err := f.keys.Open(bd.Ticket)
	if err != nil || tk.Addr != testSrc || tk.ID != f.id.ID() {
		t.Fatalf("ticket: %v %+v", err, tk)
	}
}

// reportCPU adds the CPU time per operation since cpu0 (process time, so
// the figure holds on a machine busy with other work, unlike ns/op).
func reportCPU(b *testing.B, cpu0 time.Duration) {
	if cpu := processCPU(); cpu > 0 && b.N > 0 {
		b.ReportMetric(float64(cpu-cpu0)/float64(b.N), "cpu-ns/op")
	}
}

func BenchmarkHandleForward(b *testing.B) {
	// The limiter stays on (its cost is part of the path) but never bites.
	f := newHandleFixture(b, RateLimit{Burst: 1e15})
	pkt := make([]byte, len(f.send))
	b.ReportAllocs()
	b.SetBytes(int64(len(f.send)))
	cpu0 := processCPU()
	for b.Loop() {
		copy(pkt, f.send)
		if act, _, _ := f.w.handle(pkt, testSrc, f.now, f.now.UnixNano(), f.reply); act != actForward {
			b.Fatal("not forwarded")
		}
	}
	reportCPU(b, cpu0)
}

// BenchmarkHandleBind is a bind with a valid cookie: a MAC check, a
// signature check, a seal and a fresh cookie.
func BenchmarkHandleBind(b *testing.B) {
	f := newHandleFixture(b, RateLimit{Disabled: true, BindsPerSecond: -1})
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		if act, _, _ := f.w.handle(f.bind, testSrc, f.now, f.now.UnixNano(), f.reply); act != actReply {
			b.Fatal("not answered")
		}
	}
	reportCPU(b, cpu0)
}

// BenchmarkHandleForgedBind is a bind whose cookie is wrong, as a flood
// from spoofed addresses sends: the MAC checks and the challenge.
func BenchmarkHandleForgedBind(b *testing.B) {
	f := newHandleFixture(b, RateLimit{Disabled: true, BindsPerSecond: -1})
	forged := bytes.Clone(f.bind)
	forged[wire.HeaderLen+40] ^= 1 // in the cookie
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		if act, _, _ := f.w.handle(forged, testSrc, f.now, f.now.UnixNano(), f.reply); act != actChallenge {
			b.Fatal("not challenged")
		}
	}
	reportCPU(b, cpu0)
}

// FuzzHandle feeds the relay's packet handler arbitrary datagrams: it must
// not panic, never send more than it got, forward only what opens under its
// keys (to the address inside), answer with a ticket only a signed bind
// carrying a valid cookie for its source, and challenge only binds.
func FuzzHandle(f *testing.F) {
	fx := newHandleFixture(f, RateLimit{Disabled: true, BindsPerSecond: -1})
	f.Add(fx.send)
	f.Add(fx.bind)
	f.Add(fx.send[:wire.RelaySendOverhead])
	f.Add(fx.send[:wire.RelaySendOverhead-1])
	f.Add(fx.bind[:wire.RelayBindLen-1])
	f.Add(wire.AppendRelayBind(nil, fx.id, fx.now, crypto.Cookie{}))
	f.Add(wire.AppendRelayChallenge(nil, wire.RelayChallenge{}))
	f.Add([]byte{wire.TypeRelaySend, wire.Version})
	f.Add([]byte{wire.TypeRelayed, wire.Version, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		pkt := append([]byte(nil), in...)
		act, out, dst := fx.w.handle(pkt, testSrc, fx.now, fx.now.UnixNano(), fx.reply)
		if len(out) > len(in) {
			t.Fatalf("out %d bytes > in %d", len(out), len(in))
		}
		switch act {
		case actDrop:
			if out != nil {
				t.Fatal("dropped but returned bytes")
			}
		case actForward:
			tk, err := fx.keys.Open(in[wire.HeaderLen:])
			if err != nil || tk.Addr != dst {
				t.Fatalf("forwarded to %v a frame whose ticket gives %v, %v", dst, tk.Addr, err)
			}
			if out[0] != wire.TypeRelayed || !bytes.Equal(out[wire.HeaderLen:], in[wire.HeaderLen+crypto.TicketSize:]) {
				t.Fatal("forwarded frame is not the Relayed form of the input")
			}
		case actReply:
			req, err := wire.ParseRelayBind(in)
			if err != nil {
				t.Fatalf("answered an invalid bind: %v", err)
			}
			if !fx.w.cookies.Check(testSrc, req.Cookie) {
				t.Fatal("answered a bind without a valid cookie with a ticket")
			}
			if bd, err := wire.ParseRelayBound(out); err != nil || bd.Observed != testSrc || dst != testSrc || bd.Echo != req.Echo {
				t.Fatalf("bad reply: %v %v %v", err, bd.Observed, dst)
			}
		case actChallenge:
			req, err := wire.PeekRelayBind(in)
			if err != nil {
				t.Fatalf("challenged a frame that is no bind: %v", err)
			}
			if c, err := wire.ParseRelayChallenge(out); err != nil || dst != testSrc || c.Echo != req.Echo || !fx.w.cookies.Check(testSrc, c.Cookie) {
				t.Fatalf("bad challenge: %v to %v", err, dst)
			}
		}
	})
}

// BenchmarkHandleForgedSend is a RelaySend whose ticket does not open, as a
// flood of made-up tickets sends: the open it costs, which is charged to
// nobody's rate (TestSpoofedSendFloodKeepsVictimsBudget).
func BenchmarkHandleForgedSend(b *testing.B) {
	f := newHandleFixture(b, RateLimit{Burst: 1e15})
	forged := bytes.Clone(f.send)
	forged[wire.HeaderLen+crypto.TicketSize-1] ^= 1
	pkt := make([]byte, len(forged))
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		copy(pkt, forged)
		if act, _, _ := f.w.handle(pkt, testSrc, f.now, f.now.UnixNano(), f.reply); act != actDrop {
			b.Fatal("forwarded")
		}
	}
	reportCPU(b, cpu0)
}

// FuzzUniformRun checks uniformRun against a plain count on any received
// buffer and segment size: it finds a run only when every datagram could
// be a RelaySend carrying the first one's ticket bytes, and then counts
// every datagram.
func FuzzUniformRun(f *testing.F) {
	frame := make([]byte, wire.RelaySendOverhead+40)
	frame[0], frame[1] = wire.TypeRelaySend, wire.Version
	f.Add(bytes.Repeat(frame, 4), len(frame))
	f.Add(append(bytes.Repeat(frame, 3), frame[:wire.RelaySendOverhead]...), len(frame))
	f.Add(append(bytes.Repeat(frame, 2), 1, 2, 3), len(frame))
	f.Add(frame, len(frame))
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, buf []byte, seg int) {
		if seg > 1<<16 || seg < -1 {
			return
		}
		got := uniformRun(buf, seg)
		want := 0
		if seg > 0 && len(buf) > seg {
			tk := func(p []byte) []byte { return p[wire.HeaderLen : wire.HeaderLen+crypto.TicketSize] }
			for off := 0; off < len(buf); off += seg {
				p := buf[off:min(off+seg, len(buf))]
				if len(p) < wire.RelaySendOverhead || !bytes.Equal(tk(p), tk(buf)) {
					want = -1
					break
				}
				want++
			}
			want = max(want, 0)
		}
		if got != want {
			t.Fatalf("uniformRun(%d bytes, seg %d) = %d, want %d", len(buf), seg, got, want)
		}
	})
}
