package mesh

import (
	"bytes"
	"net/netip"
	"testing"
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
