package mesh

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"net/netip"
	"sync"
)

// A mesh message is one UDP datagram. Integers are big endian.
//
//	off  len  field
//	0    2    magic "km" (0x6b 0x6d)
//	2    1    version, Version
//	3    1    kind (Kind)
//	4    8    send time, Unix milliseconds
//	12   8    sender: random per sending process
//	20   8    sequence number, per sender, from 1
//	28   16   destination address (IPv4 as IPv4-mapped IPv6)
//	44   2    destination port
//	46   n    payload: the datagram to send to the destination
//	46+n 16   tag: HMAC-SHA256 under the mesh key of bytes 0 to 46+n, first 16 bytes
//
// A heartbeat (KindHeartbeat) names its sender's own mesh address as the
// destination and carries no payload.
//
// Changelog: version 1 is the first.
const (
	// Version is the message format this build writes and reads.
	Version = 1
	// HeaderLen is the bytes before the payload.
	HeaderLen = 46
	// TagLen is the tag's length.
	TagLen = 16
	// Overhead is what a message adds to its payload.
	Overhead = HeaderLen + TagLen
	// MaxPayload is the largest payload: one keymesh frame.
	MaxPayload = 1500
	// MaxMessage is the largest message.
	MaxMessage = Overhead + MaxPayload

	magic0, magic1 = 0x6b, 0x6d
	offTime        = 4
	offSender      = 12
	offSeq         = 20
	offDst         = 28
	offPort        = 44
)

// Kind says which socket the receiving instance sends the payload from.
type Kind byte

const (
	// KindPunch carries a sealed rendezvous datagram (a Punch), sent from
	// the rendezvous socket.
	KindPunch Kind = 1
	// KindRelayed carries a Relayed frame, sent from the relay socket.
	KindRelayed Kind = 2
	// KindHeartbeat says its sender is alive; its destination is the
	// sender's own mesh address. Nothing is sent on.
	KindHeartbeat Kind = 3
)

func (k Kind) valid() bool { return k == KindPunch || k == KindRelayed || k == KindHeartbeat }

func (k Kind) String() string {
	switch k {
	case KindPunch:
		return "punch"
	case KindRelayed:
		return "relayed"
	case KindHeartbeat:
		return "heartbeat"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// Message is a decoded mesh message.
type Message struct {
	Kind Kind
	// Time is the send time, Unix milliseconds.
	Time int64
	// Sender identifies the sending process (random at its start), Seq
	// numbers its messages from 1: together they are the replay key.
	Sender, Seq uint64
	// Dst is where the receiving instance sends Payload.
	Dst netip.AddrPort
	// Payload aliases the decoded bytes.
	Payload []byte
}

// Parse decodes a message's fields without checking its tag (Key.Open
// does both). Payload aliases b.
func Parse(b []byte) (Message, error) {
	var m Message
	switch {
	case len(b) < Overhead:
		return m, ErrShort
	case len(b) > MaxMessage:
		return m, ErrTooLong
	case b[0] != magic0 || b[1] != magic1:
		return m, ErrMagic
	case b[2] != Version:
		return m, ErrVersion
	}
	m.Kind = Kind(b[3])
	if !m.Kind.valid() {
		return m, ErrKind
	}
	m.Time = int64(binary.BigEndian.Uint64(b[offTime:]))
	m.Sender = binary.BigEndian.Uint64(b[offSender:])
	m.Seq = binary.BigEndian.Uint64(b[offSeq:])
	a := netip.AddrFrom16([16]byte(b[offDst:offPort])).Unmap()
	port := binary.BigEndian.Uint16(b[offPort:])
	if a.IsUnspecified() || port == 0 {
		return m, ErrAddr
	}
	m.Dst = netip.AddrPortFrom(a, port)
	m.Payload = b[HeaderLen : len(b)-TagLen]
	return m, nil
}

// Key authenticates mesh messages. It is safe for concurrent use.
type Key struct {
	pool sync.Pool // of *mac
}

type mac struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// keyInfo binds the derived key to this use of the peer secret.
const keyInfo = "keymesh mesh v1"

// MinSecret is the shortest peer secret accepted, in bytes.
const MinSecret = 16

// NewKey derives the mesh key from the deployment's peer secret.
func NewKey(secret []byte) (*Key, error) {
	if len(secret) < MinSecret {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrSecret, len(secret), MinSecret)
	}
	k, err := hkdf.Key(sha256.New, secret, nil, keyInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("mesh key: %w", err)
	}
	key := &Key{}
	key.pool.New = func() any { return &mac{h: hmac.New(sha256.New, k)} }
	return key, nil
}

func (k *Key) tag(out, b []byte) {
	m := k.pool.Get().(*mac)
	m.h.Reset()
	m.h.Write(b)
	m.h.Sum(m.sum[:0])
	copy(out, m.sum[:TagLen])
	k.pool.Put(m)
}

// Append appends m, tagged, to dst. It fails only for a payload above
// MaxPayload, an unknown kind or an invalid destination.
func (k *Key) Append(dst []byte, m *Message) ([]byte, error) {
	switch {
	case len(m.Payload) > MaxPayload:
		return dst, ErrTooLong
	case !m.Kind.valid():
		return dst, ErrKind
	case !m.Dst.IsValid() || m.Dst.Addr().IsUnspecified() || m.Dst.Port() == 0:
		return dst, ErrAddr
	}
	start := len(dst)
	dst = append(dst, magic0, magic1, Version, byte(m.Kind))
	dst = binary.BigEndian.AppendUint64(dst, uint64(m.Time))
	dst = binary.BigEndian.AppendUint64(dst, m.Sender)
	dst = binary.BigEndian.AppendUint64(dst, m.Seq)
	a := m.Dst.Addr().Unmap().As16()
	dst = append(dst, a[:]...)
	dst = binary.BigEndian.AppendUint16(dst, m.Dst.Port())
	dst = append(dst, m.Payload...)
	var t [TagLen]byte
	k.tag(t[:], dst[start:])
	return append(dst, t[:]...), nil
}

// Open checks b's tag and decodes it. Payload aliases b.
func (k *Key) Open(b []byte) (Message, error) {
	m, err := Parse(b)
	if err != nil {
		return m, err
	}
	if !k.Verify(b) {
		return Message{}, ErrMAC
	}
	return m, nil
}

// Verify reports whether b (at least Overhead bytes) ends in the right tag.
func (k *Key) Verify(b []byte) bool {
	if len(b) < Overhead {
		return false
	}
	var t [TagLen]byte
	k.tag(t[:], b[:len(b)-TagLen])
	return hmac.Equal(t[:], b[len(b)-TagLen:])
}
