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
//	[0] frame type   [1] version (VersionOf the type)
//
// Frame types and layouts:
//
//	0x21 Sealed     [2:34] sender Ed25519 key  [34:58] nonce  [58:] NaCl box of a Message
//	0x22 Data       [2:10] sender tag  [10:] payload (a QUIC packet), peer to peer direct
//	0x23 RelaySend  [2:101] recipient's ticket  [101:109] sender tag  [109:] payload, peer to relay
//	0x24 Relayed    [2:10] sender tag  [10:] payload, relay to peer (never larger than the RelaySend)
//	0x28 Request    [2:34] sender Ed25519 key  [34:50] cookie proof  [50:58] salt (random)
//	                [58:] NaCl box of a Message under the nonce [34:58]; peer to rendezvous
//	0x29 CookieReply [2:18] cookie  [18:26] the request's salt XOR the cookie [0:8]; rendezvous
//	                to peer, unsealed
//
// A Request's cookie proof is SHA-256(cookie, "keymesh rz proof", sender
// key, salt) cut to 16 bytes (RequestProof), or random bytes while the peer
// has no cookie. The rendezvous checks it (a hash per cookie period) before
// it computes any X25519 or opens any box, in the manner of WireGuard's
// mac2: a Request without a valid proof gets a CookieReply (26 bytes,
// smaller than any Request) and the peer repeats its request with the
// proof. The cookie also stays inside the box (Register, Connect), where
// the rendezvous checks it as before.
//
// The relay bind handshake (version BindVersion) proves a peer's address
// before the relay checks a signature or hands out a ticket, in the manner
// of QUIC's Retry (RFC 9000 section 8.1) and WireGuard's cookie reply. The
// relay's cookie is a MAC over the source address, port and time period
// under a secret every relay instance shares (crypto.CookieJar), so the
// relay keeps no state for it:
//
//	0x25 RelayBind      [2:34] peer key  [34:42] time (Unix ms)  [42:58] relay cookie (zero: none yet)
//	                    [58:122] Ed25519 signature over [0:58]
//	                    [122:RelayBindLen] zero padding, so that no answer is larger than the request
//	0x27 RelayChallenge [2:18] cookie for the bind's source
//	                    [18:26] echo: the bind's signature [0:8] XOR the cookie [0:8], so that no
//	                    byte of an answer to an unproven source is the sender's choice
//	0x26 RelayBound     [2:101] ticket  [101:119] observed address  [119:127] ticket expiry (Unix s)
//	                    [127:143] cookie for the next bind  [143:151] echo: the bind's signature [0:8]
//
// A bind without a valid cookie for its source gets a RelayChallenge (or
// nothing, over the source's rate); the peer signs again with that cookie
// and gets a RelayBound. The RelayBound's fresh cookie lets the next
// re-bind go straight through. A bind replayed from another address fails
// the cookie check, and the signature covers the cookie, so it vouches for
// the address the relay saw.
//
// # Version history
//
//	1: first version. The Report message (type 8, peer to rendezvous) came
//	   later within it: a server that does not know it drops it.
//	2: relay bind handshake only (RelayBind, RelayChallenge, RelayBound carry
//	   BindVersion; other frames stay at 1): the bind carries the relay's
//	   address-validation cookie under its signature, RelayChallenge is new,
//	   RelayBound carries the next cookie and an echo of the bind.
//	3: rendezvous requests only (Request and CookieReply carry RequestVersion;
//	   other frames keep theirs): a peer's messages to the rendezvous are
//	   Request frames (no longer Sealed frames) whose nonce carries a cookie
//	   proof outside the box; the rendezvous answers one without a valid
//	   proof with an unsealed CookieReply (it used to answer with a sealed
//	   Challenge, after an X25519 for an unknown sender key).
//	   Later within it: Registered, ConnectReply, Punch and Error end with
//	   an optional 8-byte boot epoch (absent when 0), the registry's
//	   identity: it changes when the registry lost its records (a restart
//	   without a snapshot, a Redis that came back empty), and a peer that
//	   sees it change in a sealed answer registers again at once. Parsers
//	   from before it refuse these answers from a server that sends one.
package wire

import (
	"encoding/binary"
	"errors"
)

// Version is the protocol version of every frame except the relay bind
// handshake's and the rendezvous requests'.
const Version = 1

// BindVersion is the protocol version of the relay bind handshake frames:
// RelayBind, RelayChallenge and RelayBound.
const BindVersion = 2

// RequestVersion is the protocol version of a peer's Request frames to the
// rendezvous and of the rendezvous' CookieReply.
const RequestVersion = 3

// VersionOf is the protocol version frames of type t carry.
func VersionOf(t byte) byte {
	switch t {
	case TypeRelayBind, TypeRelayChallenge, TypeRelayBound:
		return BindVersion
	case TypeRequest, TypeCookieReply:
		return RequestVersion
	}
	return Version
}

// FrameMin and FrameMax bound the keymesh frame types: a datagram whose
// first byte is in [FrameMin, FrameMax] is a keymesh frame (RFC 7983 style
// demultiplexing; see the package comment). IsFrameType is the one test.
const (
	FrameMin byte = 0x20
	FrameMax byte = 0x2f
)

// IsFrameType reports whether t, a datagram's first byte, is in the
// keymesh frame range.
func IsFrameType(t byte) bool { return t >= FrameMin && t <= FrameMax }

// Frame types.
const (
	TypeSealed     byte = 0x21
	TypeData       byte = 0x22
	TypeRelaySend  byte = 0x23
	TypeRelayed    byte = 0x24
	TypeRelayBind  byte = 0x25
	TypeRelayBound byte = 0x26
	// TypeRelayChallenge is a relay's stateless challenge to a bind.
	TypeRelayChallenge byte = 0x27
	// TypeRequest is a peer's sealed message to the rendezvous, with a
	// cookie proof in its nonce.
	TypeRequest byte = 0x28
	// TypeCookieReply is the rendezvous' unsealed cookie for a Request
	// without a valid proof.
	TypeCookieReply byte = 0x29
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
	if len(b) >= HeaderLen && IsFrameType(b[0]) {
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
	if !IsFrameType(b[0]) {
		return 0, ErrNotKeymesh
	}
	if b[1] != VersionOf(b[0]) {
		return b[0], ErrVersion
	}
	return b[0], nil
}
