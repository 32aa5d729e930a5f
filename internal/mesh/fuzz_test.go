package mesh

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

// FuzzOpen feeds arbitrary datagrams to the decoder: it must never panic,
// anything it accepts must re-encode to the same bytes, and nothing but a
// message tagged with the key may verify.
func FuzzOpen(f *testing.F) {
	k := mustKey(f, secret)
	for _, m := range []Message{
		{Kind: KindPunch, Time: 1, Sender: 1, Seq: 1, Dst: dst, Payload: []byte{0x20, 1, 2, 3}},
		{Kind: KindHeartbeat, Time: 1 << 41, Sender: 3, Seq: 9, Dst: netip.MustParseAddrPort("10.0.1.5:3490")},
		{Kind: KindRelayed, Time: 1 << 40, Sender: 1 << 63, Seq: 1 << 62, Dst: netip.MustParseAddrPort("[2001:db8::2]:1"), Payload: bytes.Repeat([]byte{0x24}, 1200)},
	} {
		b, err := k.Append(nil, &m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte("km\x01\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if _, err2 := k.Open(b); err2 == nil {
				t.Fatal("Open accepted what Parse refused")
			}
			return
		}
		if len(m.Payload) != len(b)-Overhead {
			t.Fatalf("payload %d bytes of a %d-byte message", len(m.Payload), len(b))
		}
		if _, err := k.Open(b); err != nil {
			return
		}
		re, err := k.Append(nil, &m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("re-encoded %x, want %x", re, b)
		}
	})
}

// FuzzCheck feeds arbitrary datagrams from arbitrary sources to a node's
// receive checks, after an authentic instance made itself known: they must
// never panic, nothing whose tag does not verify is accepted, and the
// tag checks of forgeries that do not carry the known instance's number
// from its address stay within the unverified budget (the clock stands
// still, so the budget does not refill).
func FuzzCheck(f *testing.F) {
	k := mustKey(f, secret)
	now := time.Unix(1_800_000_000, 0)
	known := netip.MustParseAddrPort("127.0.0.2:3490")
	for _, m := range []Message{
		{Kind: KindHeartbeat, Time: now.UnixMilli(), Sender: 7, Seq: 2, Dst: known},
		{Kind: KindRelayed, Time: now.UnixMilli(), Sender: 7, Seq: 3, Dst: dst, Payload: []byte{0x24, 1}},
		{Kind: KindPunch, Time: now.UnixMilli(), Sender: 8, Seq: 1, Dst: dst, Payload: []byte{0x20}},
	} {
		b, err := k.Append(nil, &m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint16(3490), byte(2))
	}
	f.Add([]byte("km\x01\x03"), uint16(1), byte(9))
	const budget = 8
	f.Fuzz(func(t *testing.T, b []byte, port uint16, host byte) {
		n, err := NewNode(Config{Key: k, Conn: listen(t, "127.0.0.1:0"), Now: func() time.Time { return now },
			UnverifiedRate: 1e-9, UnverifiedBurst: budget, Handle: func(Kind, netip.AddrPort, []byte) {}})
		if err != nil {
			t.Fatal(err)
		}
		hb, _ := k.Append(nil, &Message{Kind: KindHeartbeat, Time: now.UnixMilli(), Sender: 7, Seq: 1, Dst: known})
		if _, ok := n.check(hb, known, now); !ok {
			t.Fatal("the known instance's first heartbeat was refused")
		}
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, host}), port)
		for range 2 * budget {
			if _, ok := n.check(b, from, now); ok && !k.Verify(b) {
				t.Fatalf("accepted a datagram whose tag does not verify: %x", b)
			}
		}
		if m, err := Parse(b); err == nil && m.Sender == 7 && from == known {
			return // the known instance's number from its address: checked without the budget
		}
		if st := n.Stats(); st.Dropped[DropBadTag] > budget-1 {
			t.Fatalf("%d forged tags checked, budget %d (one spent on the first heartbeat)", st.Dropped[DropBadTag], budget)
		}
	})
}
