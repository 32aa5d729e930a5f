// Package wire holds keymesh's datagram formats: the frames peers, the
// rendezvous servers and the relays exchange over UDP (and, framed, over the
// TLS stream fallback). Everything here is a pure codec over byte slices: no
// I/O, no clocks, no state, so each decoder is fuzzed on its own.
//
// # Demultiplexing
//
// One UDP socket carries everything, told apart by the first byte (RFC 7983
// style): 0x00-0x03 with the STUN magic cookie is STUN; 0x20-0x2f is a keymesh
// frame, whose second byte is the protocol version. Every keymesh frame
// starts:
//
//	[0] frame type   [1] version (Version)
//
// Frame types and layouts:
//
//	0x21 Sealed     [2:34] sender Ed25519 key  [34:58] nonce  [58:] NaCl box of a Message
//	0x22 Data       [2:10] sender tag  [10:] payload (a QUIC packet), peer to peer direct
//	0x23 RelaySend  [2:101] recipient's ticket  [101:109] sender tag  [109:] payload, peer to relay
//	0x24 Relayed    [2:10] sender tag  [10:] payload, relay to peer (never larger than the RelaySend)
//	0x25 RelayBind  [2:34] peer key  [34:42] time (Unix ms)  [42:106] Ed25519 signature over [0:42]
//	                [106:RelayBindMin] zero padding, so the reply is never larger than the request
//	0x26 RelayBound [2:101] ticket  [101:119] observed address  [119:127] ticket expiry (Unix s)
//
// # Version history
//
//	1: first version. The Report message (type 8, peer to rendezvous) came
//	   later within it: a server that does not know it drops it.
package wire

import (
	"encoding/binary"
	"errors"
)

// Version is the protocol version this package speaks.
const Version = 1

// Frame types.
const (
	TypeSealed     byte = 0x21
	TypeData       byte = 0x22
	TypeRelaySend  byte = 0x23
	TypeRelayed    byte = 0x24
	TypeRelayBind  byte = 0x25
	TypeRelayBound byte = 0x26
)

// MaxFrame is the largest frame any keymesh party sends or accepts.
const MaxFrame = 1500

// HeaderLen is the common frame header: type and version.
const HeaderLen = 2

// Errors returned by decoders.
var (
	ErrShort      = errors.New("frame truncated")
	ErrTooLarge   = errors.New("frame too large")
	ErrNotKeymesh = errors.New("not a keymesh frame")
	ErrVersion    = errors.New("unsupported protocol version")
	ErrMalformed  = errors.New("malformed message")
)

// Kind classifies a datagram by its first bytes.
type Kind int

// Kinds of datagrams on a keymesh socket.
const (
	KindUnknown Kind = iota
	KindSTUN
	KindKeymesh
)

// stunMagic is the STUN magic cookie (RFC 5389).
const stunMagic = 0x2112A442

// Classify tells STUN from keymesh frames from anything else.
func Classify(b []byte) Kind {
	if len(b) >= 20 && b[0] < 4 && binary.BigEndian.Uint32(b[4:8]) == stunMagic {
		return KindSTUN
	}
	if len(b) >= HeaderLen && b[0] >= 0x20 && b[0] <= 0x2f {
		return KindKeymesh
	}
	return KindUnknown
}

// Header checks a keymesh frame's header and returns its type.
func Header(b []byte) (byte, error) {
	if len(b) < HeaderLen {
		return 0, ErrShort
	}
	if len(b) > MaxFrame {
		return 0, ErrTooLarge
	}
	if b[0] < 0x20 || b[0] > 0x2f {
		return 0, ErrNotKeymesh
	}
	if b[1] != Version {
		return b[0], ErrVersion
	}
	return b[0], nil
}
