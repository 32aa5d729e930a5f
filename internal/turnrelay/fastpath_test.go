package turnrelay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/crypto"
)

// The attacks on the ChannelData fast path (fastpath.go): each test sends
// what must not be relayed first and then what must, and asserts that the
// peer's first datagram is the latter, so a frame wrongly relayed shows up
// however the scheduler runs. Each refused frame is also seen refused
// (pion's error count, or the peer refusal count) before the next is sent.

// peerSink is a peer on loopback that records what the relay sends it.
type peerSink struct {
	t *testing.T
	c *net.UDPConn
}

func newSink(t *testing.T) *peerSink {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &peerSink{t: t, c: c}
}

func (s *peerSink) addr() *net.UDPAddr { return s.c.LocalAddr().(*net.UDPAddr) }

// next returns the next datagram, failing the test after 3 s.
func (s *peerSink) next() []byte {
	s.t.Helper()
	s.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := s.c.ReadFromUDP(buf)
	if err != nil {
		s.t.Fatalf("sink %v: nothing relayed: %v", s.addr(), err)
	}
	return buf[:n]
}

// expect asserts that the sink's next datagram is want.
func (s *peerSink) expect(want string) {
	s.t.Helper()
	if got := string(s.next()); got != want {
		s.t.Fatalf("sink got %q, want %q: a frame that must be dropped was relayed", got, want)
	}
}

// channelFrame is a ChannelData frame for channel ch carrying payload.
func channelFrame(ch uint16, payload string) []byte {
	f := make([]byte, 4, 4+len(payload))
	binary.BigEndian.PutUint16(f, ch)
	binary.BigEndian.PutUint16(f[2:], uint16(len(payload)))
	return append(f, payload...)
}

func (c *rawClient) bindChannel(ch uint16, peer *net.UDPAddr) *stun.Message {
	c.t.Helper()
	return c.request(stun.MethodChannelBind, channelNumber(ch), peerAddr(peer))
}

func (c *rawClient) mustBindChannel(ch uint16, peer *net.UDPAddr) {
	c.t.Helper()
	if r := c.bindChannel(ch, peer); r.Type.Class != stun.ClassSuccessResponse {
		c.t.Fatalf("channel bind %#x to %v: %v (code %d)", ch, peer, r, errCode(r))
	}
}

// release ends c's allocation (Refresh with LIFETIME 0).
func (c *rawClient) release() {
	c.t.Helper()
	r := c.request(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}})
	if r.Type.Class != stun.ClassSuccessResponse {
		c.t.Fatalf("refresh 0: %v (code %d)", r, errCode(r))
	}
}

func newRawUDP(t *testing.T, ts *testServer, user string) *rawClient {
	u, p := crypto.TURNCredentials(testSecret, user, time.Hour, time.Now())
	return dialRaw(t, "udp", ts.udp, u, p)
}

// refused sends frame from c and waits until the server has refused it
// (one more failed request or packet in pion's count).
func refused(t *testing.T, ts *testServer, c *rawClient, frame []byte) {
	t.Helper()
	before := value(t, ts.metrics.requestErrors)
	c.send(frame)
	waitFor(t, "the frame refused", func() bool { return value(t, ts.metrics.requestErrors) >= before+1 })
}

// TestChannelDataFromStrangerDropped: a ChannelData frame for a channel
// that another client bound is not relayed, whether its sender holds no
// allocation or one of its own without that channel, and whichever of the
// server's sockets it reaches.
func TestChannelDataFromStrangerDropped(t *testing.T) {
	ts := startServer(t, 2, nil)
	sink := newSink(t)
	owner := newRawUDP(t, ts, "owner")
	owner.allocateRaw(17)
	owner.mustBindChannel(0x4000, sink.addr())

	stranger := newRawUDP(t, ts, "stranger")
	refused(t, ts, stranger, channelFrame(0x4000, "from a stranger without an allocation"))
	stranger.allocateRaw(17)
	refused(t, ts, stranger, channelFrame(0x4000, "from a stranger with its own allocation"))

	owner.send(channelFrame(0x4000, "owner"))
	sink.expect("owner")
}

// TestChannelDataUnboundChannelDropped: the owner of an allocation reaches
// only the channels it bound.
func TestChannelDataUnboundChannelDropped(t *testing.T) {
	ts := startServer(t, 1, nil)
	sink := newSink(t)
	c := newRawUDP(t, ts, "owner")
	c.allocateRaw(17)
	c.mustBindChannel(0x4000, sink.addr())
	refused(t, ts, c, channelFrame(0x4001, "unbound"))
	refused(t, ts, c, channelFrame(0x7FFF, "unbound"))
	c.send(channelFrame(0x4000, "bound"))
	sink.expect("bound")
}

// TestChannelDataAfterReleaseDropped: once an allocation ends, its channels
// end with it: nothing is relayed for them, and a new allocation on the
// same 5-tuple starts without channels.
func TestChannelDataAfterReleaseDropped(t *testing.T) {
	ts := startServer(t, 1, nil)
	old, fresh := newSink(t), newSink(t)
	c := newRawUDP(t, ts, "owner")
	c.allocateRaw(17)
	c.mustBindChannel(0x4000, old.addr())
	c.send(channelFrame(0x4000, "while bound"))
	old.expect("while bound")

	c.release()
	refused(t, ts, c, channelFrame(0x4000, "after release"))
	c.allocateRaw(17)
	refused(t, ts, c, channelFrame(0x4000, "new allocation, no channel yet"))
	c.mustBindChannel(0x4000, fresh.addr())
	c.send(channelFrame(0x4000, "rebound"))
	fresh.expect("rebound")

	// The old peer got nothing after the release.
	old.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := old.c.ReadFrom(make([]byte, 64)); err == nil {
		t.Fatalf("old peer got %d bytes after the release", n)
	}
}

// TestChannelDataRefusedPeerDropped: a channel to a peer the address
// policy refuses is never bound, so nothing is relayed on its number.
func TestChannelDataRefusedPeerDropped(t *testing.T) {
	ts := startServer(t, 1, nil)
	sink := newSink(t)
	c := newRawUDP(t, ts, "owner")
	c.allocateRaw(17)
	for _, peer := range []string{"10.1.2.3:9", "169.254.169.254:80"} {
		r := c.bindChannel(0x4001, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(peer)))
		if code := errCode(r); code != int(stun.CodeForbidden) {
			t.Fatalf("channel bind to %s: code %d, want 403", peer, code)
		}
		refused(t, ts, c, channelFrame(0x4001, "to a refused peer"))
	}
	c.mustBindChannel(0x4000, sink.addr())
	c.send(channelFrame(0x4000, "allowed"))
	sink.expect("allowed")
}

// TestChannelDataToEndedOwnAllocationRefused: a channel bound to another
// client's allocation on the relay's public address stops at that
// allocation's end; the port is then just a port of the relay.
func TestChannelDataToEndedOwnAllocationRefused(t *testing.T) {
	public := netip.MustParseAddr("203.0.113.7")
	ts := startServer(t, 1, func(c *Config) {
		c.RelayIP, c.AdvertiseIP = netip.IPv4Unspecified(), public
		c.AllowDestinations = nil
	})
	a, b := newRawUDP(t, ts, "a"), newRawUDP(t, ts, "b")
	a.allocateRaw(17)
	relayedB := b.allocateRaw(17)
	a.mustBindChannel(0x4000, relayedB)
	b.release()
	before := value(t, ts.metrics.peerRefusals)
	a.send(channelFrame(0x4000, "to an ended allocation's port"))
	waitFor(t, "the send refused", func() bool { return value(t, ts.metrics.peerRefusals) >= before+1 })
}

// TestChannelDataFrameRules: the frame is read as pion reads it: a length
// shorter than the datagram cuts the payload (padding), and a datagram of
// pion's read limit or more is dropped.
func TestChannelDataFrameRules(t *testing.T) {
	ts := startServer(t, 1, nil)
	sink := newSink(t)
	c := newRawUDP(t, ts, "owner")
	c.allocateRaw(17)
	c.mustBindChannel(0x4000, sink.addr())

	big := channelFrame(0x4000, string(make([]byte, pionInboundMTU-4)))
	c.send(big)
	padded := channelFrame(0x4000, "abcde")
	binary.BigEndian.PutUint16(padded[2:], 3)
	c.send(padded)
	sink.expect("abc")
}

// TestPeerDatagramsOnlyFromBoundPeers is the way back: a datagram to an
// allocation's relayed address from a host without a permission is
// dropped; one from a permitted host without a channel comes as a Data
// indication; one from the channel's peer comes as ChannelData on that
// channel, padded to four bytes as pion pads it.
func TestPeerDatagramsOnlyFromBoundPeers(t *testing.T) {
	ts := startServer(t, 2, nil)
	c := newRawUDP(t, ts, "owner")
	relayed := c.allocateRaw(17)
	bound := newSink(t) // 127.0.0.1
	c.mustBindChannel(0x4000, bound.addr())

	stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	permitted := newSink(t) // 127.0.0.1 too: the permission is the host's

	if _, err := stranger.WriteToUDP([]byte("stranger"), relayed); err != nil {
		t.Fatal(err)
	}
	if _, err := permitted.c.WriteToUDP([]byte("permitted"), relayed); err != nil {
		t.Fatal(err)
	}
	if _, err := bound.c.WriteToUDP([]byte("bound"), relayed); err != nil {
		t.Fatal(err)
	}

	first, err := c.read(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := &stun.Message{Raw: first}
	if err := m.Decode(); err != nil || m.Type != stun.NewType(stun.MethodData, stun.ClassIndication) {
		t.Fatalf("first datagram to the client is %x, want the permitted host's Data indication", first)
	}
	data, err := m.Get(stun.AttrData)
	if err != nil || string(data) != "permitted" {
		t.Fatalf("Data indication carries %q (%v), want %q", data, err, "permitted")
	}
	second, err := c.read(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := append(channelFrame(0x4000, "bound"), 0, 0, 0)
	if string(second) != string(want) {
		t.Fatalf("second datagram to the client is %x, want ChannelData %x", second, want)
	}
}

// TestChannelTableFollowsPion: the fast path's table holds a channel, both
// ways, exactly while pion does: from the ChannelBind to the allocation's
// end.
func TestChannelTableFollowsPion(t *testing.T) {
	ts := startServer(t, 1, nil)
	sink := newSink(t)
	c := newRawUDP(t, ts, "owner")
	c.allocateRaw(17)
	if n, p := ts.channels.len(); n != 0 || p != 0 {
		t.Fatalf("table holds %d/%d channels before any bind", n, p)
	}
	c.mustBindChannel(0x4000, sink.addr())
	c.mustBindChannel(0x4000, sink.addr()) // a refresh
	if n, p := ts.channels.len(); n != 1 || p != 1 {
		t.Fatalf("table holds %d/%d channels after one bind, want 1/1", n, p)
	}
	for _, r := range ts.channels.m {
		if r.relay.udp == nil {
			t.Error("the relayed socket is not a *net.UDPConn: the way back stays with pion")
		}
	}
	if runtime.GOOS == "linux" && ts.guards[0].batch == nil {
		t.Error("the server socket is not read in batches")
	}
	c.release()
	waitFor(t, "the channel gone with its allocation", func() bool {
		n, p := ts.channels.len()
		return n == 0 && p == 0
	})
}

// FuzzChannelData: the fast path reads a frame as RFC 8656 section 12.4
// and pion define it (a number in 0x4000-0x7FFF, a length the datagram
// holds, the payload that length gives), and never reads past the
// datagram.
func FuzzChannelData(f *testing.F) {
	f.Add(channelFrame(0x4000, "payload"))
	f.Add(append(channelFrame(0x7FFF, "pad"), 0))
	f.Add([]byte{0x40, 0, 0, 9, 1, 2})
	f.Add([]byte{0x80, 0, 0, 0})
	f.Add([]byte{0x3F, 0xFF, 0, 0})
	f.Add([]byte{0x40})
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		number, payload, ok := parseChannelData(b)
		want := len(b) >= 4 && b[0]&0xC0 == 0x40 && int(b[2])<<8|int(b[3]) <= len(b)-4
		if ok != want {
			t.Fatalf("parseChannelData(%x) ok = %v, want %v", b, ok, want)
		}
		if !ok {
			return
		}
		l := int(b[2])<<8 | int(b[3])
		if number != uint16(b[0])<<8|uint16(b[1]) || len(payload) != l || (l > 0 && &payload[0] != &b[4]) {
			t.Fatalf("parseChannelData(%x) = %#x, %x", b, number, payload)
		}
	})
}
