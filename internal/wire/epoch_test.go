package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

// TestEpochTrailer: the answers that carry the registry's boot epoch
// round-trip it, parse without it (as from an older server), and refuse a
// trailer that is not exactly 8 bytes or is 0.
func TestEpochTrailer(t *testing.T) {
	const epoch = 0x0102030405060708
	for _, body := range []Body{
		&Registered{Reflexive: netip.MustParseAddrPort("203.0.113.5:40000"), TTL: 90, Refresh: 20, Instance: "i1", Epoch: epoch},
		&ConnectReply{TxID: 79, Epoch: epoch},
		&Punch{TxID: 77, Start: 1, Epoch: epoch},
		&Error{Code: ErrCodeNotRegistered, For: MsgConnect, Text: "register first", Epoch: epoch},
	} {
		b := AppendMessage(nil, Message{Time: 1, Body: body})
		got, err := ParseMessage(b)
		if err != nil {
			t.Fatalf("%s: %v", body.Type(), err)
		}
		if !reflect.DeepEqual(got.Body, body) {
			t.Errorf("%s: got %+v, want %+v", body.Type(), got.Body, body)
		}
		if _, err := ParseMessage(b[:len(b)-8]); err != nil {
			t.Errorf("%s without its epoch: %v", body.Type(), err)
		}
		for _, cut := range []int{1, 4, 7} {
			if _, err := ParseMessage(b[:len(b)-cut]); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s with %d epoch bytes: %v, want ErrMalformed", body.Type(), 8-cut, err)
			}
		}
		zero := append(bytes.Clone(b[:len(b)-8]), make([]byte, 8)...)
		if _, err := ParseMessage(zero); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s with a zero epoch on the wire: %v, want ErrMalformed", body.Type(), err)
		}
	}
}
