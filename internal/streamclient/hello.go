package streamclient

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

func helloSigned(b []byte) []byte {
	return append([]byte(helloContext), b[:1+32+8]...)
}

// AppendClientHello appends a signed client hello.
func AppendClientHello(out []byte, id *crypto.Identity, now time.Time) []byte {
	me := id.ID()
	start := len(out)
	out = append(out, version)
	out = append(out, me[:]...)
	out = binary.BigEndian.AppendUint64(out, uint64(now.UnixMilli()))
	return append(out, id.Sign(helloSigned(out[start:]))...)
}

// ClientHelloTime returns a client hello's clock after checking its size and
// version: the cheap checks, before the signature.
func ClientHelloTime(b []byte) (time.Time, error) {
	if len(b) != ClientHelloLen {
		return time.Time{}, fmt.Errorf("%w: %d bytes, want %d", ErrHello, len(b), ClientHelloLen)
	}
	if b[0] != version {
		return time.Time{}, fmt.Errorf("%w: version %d", ErrHello, b[0])
	}
	return time.UnixMilli(int64(binary.BigEndian.Uint64(b[33:41]))), nil
}

// ParseClientHello checks a client hello's size, version and signature.
func ParseClientHello(b []byte) (crypto.PeerID, time.Time, error) {
	var id crypto.PeerID
	if len(b) != ClientHelloLen {
		return id, time.Time{}, fmt.Errorf("%w: %d bytes, want %d", ErrHello, len(b), ClientHelloLen)
	}
	if b[0] != version {
		return id, time.Time{}, fmt.Errorf("%w: version %d", ErrHello, b[0])
	}
	copy(id[:], b[1:33])
	ts := time.UnixMilli(int64(binary.BigEndian.Uint64(b[33:41])))
	if !ed25519.Verify(id.PublicKey(), helloSigned(b), b[41:]) {
		return id, ts, fmt.Errorf("%w: signature", ErrHello)
	}
	return id, ts, nil
}

func AppendServerHello(out []byte, presence netip.AddrPort) []byte {
	out = append(out, version)
	return wire.AppendAddr(out, presence)
}

func ParseServerHello(b []byte) (netip.AddrPort, error) {
	if len(b) != serverHelloLen || b[0] != version {
		return netip.AddrPort{}, fmt.Errorf("%w: server hello of %d bytes", ErrHello, len(b))
	}
	return wire.ParseAddr(b[1:])
}

// AppendDatagram frames a datagram for the tunnel.
func AppendDatagram(out []byte, addr netip.AddrPort, payload []byte) []byte {
	out = wire.AppendAddr(out, addr)
	return append(out, payload...)
}

// ParseDatagram splits a tunnel datagram.
func ParseDatagram(b []byte) (netip.AddrPort, []byte, error) {
	if len(b) < AddrLen {
		return netip.AddrPort{}, nil, wire.ErrShort
	}
	if len(b)-AddrLen > MaxPayload {
		return netip.AddrPort{}, nil, ErrTooLarge
	}
	a, err := wire.ParseAddr(b)
	if err != nil {
		return a, nil, err
	}
	if !a.IsValid() || a.Port() == 0 {
		return a, nil, fmt.Errorf("%w: no address", wire.ErrMalformed)
	}
	return a, b[AddrLen:], nil
}
