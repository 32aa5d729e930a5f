package daemon

import (
	"bytes"
	"testing"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/names"
)

func FuzzReadFrame(f *testing.F) {
	var b bytes.Buffer
	WriteFrame(&b, []byte("hello"))
	f.Add(b.Bytes())
	f.Add([]byte{0xff, 0xff, 1})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, in []byte) {
		buf := make([]byte, MaxFrame)
		r := bytes.NewReader(in)
		for {
			p, err := ReadFrame(r, buf)
			if err != nil {
				return
			}
			var out bytes.Buffer
			if err := WriteFrame(&out, p); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzParseSOCKSDatagram(f *testing.F) {
	f.Add([]byte{0, 0, 0, 4, 0xfd, 0x4b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0, 53, 'x'})
	f.Add([]byte{0, 0, 0, 1, 127, 0, 0, 1, 0, 53, 'x'})
	f.Add(append([]byte{0, 0, 0, 3, 5}, "a.b.c\x00\x35x"...))
	f.Add(append([]byte{0, 0, 0, 3, 11}, "web.keymesh\x00\x35x"...))
	s := &Server{cfg: Config{Names: fuzzNames(f)}}
	f.Fuzz(func(t *testing.T, in []byte) {
		dst, hdr, _, err := parseSOCKSDatagram(in, s.overlayAddr)
		if err != nil {
			return
		}
		if !dst.Addr().Is6() || dst.Port() == 0 || len(hdr) == 0 {
			t.Fatalf("accepted %v with header %x", dst, hdr)
		}
	})
}

// fuzzNames is a names table where web.keymesh names a fresh peer.
func fuzzNames(tb testing.TB) *names.Table {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		tb.Fatal(err)
	}
	t, err := names.NewTable("", map[string]crypto.PeerID{"web": id.ID()})
	if err != nil {
		tb.Fatal(err)
	}
	return t
}
