package wire

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
)

// EchoLen is the size of an Echo.
const EchoLen = 8

// Echo ties a relay's answer to the bind it answers: the first EchoLen
// bytes of that bind's signature, which nobody off the path can guess.
type Echo [EchoLen]byte

// RelayBind offsets and sizes.
const (
	bindKeyOff    = HeaderLen
	bindTimeOff   = bindKeyOff + 32
	bindCookieOff = bindTimeOff + 8
	bindSigOff    = bindCookieOff + crypto.CookieSize
	bindEnd       = bindSigOff + ed25519.SignatureSize

	// RelayChallengeLen is the size of a RelayChallenge frame.
	RelayChallengeLen = HeaderLen + crypto.CookieSize + EchoLen
	// RelayBoundLen is the size of a RelayBound frame.
	RelayBoundLen = HeaderLen + crypto.TicketSize + AddrLen + 8 + crypto.CookieSize + EchoLen
	// RelayBindLen is the size of a RelayBind frame: padded so that neither
	// answer (RelayChallenge, RelayBound) is ever larger than the request.
	RelayBindLen = max(bindEnd, RelayBoundLen, RelayChallengeLen)
)

// RelayBind is a peer's request for a ticket.
type RelayBind struct {
	ID   crypto.PeerID
	Time time.Time // the peer's clock, to the millisecond
	// Cookie is the relay's address-validation cookie for the address the
	// bind comes from (zero when the peer has none yet). It is covered by
	// the signature, so the signature vouches for that address.
	Cookie crypto.Cookie
	// Echo is what the relay's answer repeats (the signature's start).
	Echo Echo
}

// AppendRelayBind appends a signed, padded request for a ticket, carrying
// cookie (the zero Cookie to ask for one).
func AppendRelayBind(out []byte, id *crypto.Identity, now time.Time, cookie crypto.Cookie) []byte {
	start := len(out)
	me := id.ID()
	out = append(out, TypeRelayBind, BindVersion)
	out = append(out, me[:]...)
	out = binary.BigEndian.AppendUint64(out, uint64(now.UnixMilli()))
	out = append(out, cookie[:]...)
	out = append(out, id.Sign(out[start:])...)
	for len(out)-start < RelayBindLen {
		out = append(out, 0)
	}
	return out
}

// PeekRelayBind checks a RelayBind frame's header and size and returns its
// fields without checking the signature: the cheap look a relay takes
// before deciding whether the signature is worth checking.
func PeekRelayBind(b []byte) (RelayBind, error) {
	var r RelayBind
	t, err := Header(b)
	if err != nil {
		return r, err
	}
	if t != TypeRelayBind {
		return r, fmt.Errorf("%w: frame type %#x is not relay-bind", ErrMalformed, t)
	}
	if len(b) < RelayBindLen {
		return r, ErrShort
	}
	copy(r.ID[:], b[bindKeyOff:bindTimeOff])
	r.Time = time.UnixMilli(int64(binary.BigEndian.Uint64(b[bindTimeOff:])))
	copy(r.Cookie[:], b[bindCookieOff:bindSigOff])
	copy(r.Echo[:], b[bindSigOff:])
	return r, nil
}

// ParseRelayBind is PeekRelayBind plus the signature check.
func ParseRelayBind(b []byte) (RelayBind, error) {
	r, err := PeekRelayBind(b)
	if err != nil {
		return r, err
	}
	if !ed25519.Verify(r.ID.PublicKey(), b[:bindSigOff], b[bindSigOff:bindEnd]) {
		return r, fmt.Errorf("%w: relay-bind signature", crypto.ErrOpen)
	}
	return r, nil
}

// RelayChallenge is a relay's answer to a bind whose cookie it did not
// accept: a fresh cookie for the address the bind came from.
type RelayChallenge struct {
	Cookie crypto.Cookie
	Echo   Echo
}

// maskedEcho is the echo as a challenge carries it: masked with the
// cookie, so that no byte of the answer to an unproven source is the
// sender's choice (a forged bind's "signature" is).
func (c *RelayChallenge) maskedEcho() (m Echo) {
	for i := range m {
		m[i] = c.Echo[i] ^ c.Cookie[i]
	}
	return m
}

// AppendRelayChallenge appends a RelayChallenge frame.
func AppendRelayChallenge(out []byte, c RelayChallenge) []byte {
	out = append(out, TypeRelayChallenge, BindVersion)
	out = append(out, c.Cookie[:]...)
	m := c.maskedEcho()
	return append(out, m[:]...)
}

// ParseRelayChallenge decodes a RelayChallenge frame.
func ParseRelayChallenge(b []byte) (RelayChallenge, error) {
	var c RelayChallenge
	t, err := Header(b)
	if err != nil {
		return c, err
	}
	if t != TypeRelayChallenge {
		return c, fmt.Errorf("%w: frame type %#x is not relay-challenge", ErrMalformed, t)
	}
	if len(b) != RelayChallengeLen {
		return c, ErrShort
	}
	copy(c.Cookie[:], b[HeaderLen:])
	copy(c.Echo[:], b[HeaderLen+crypto.CookieSize:])
	c.Echo = c.maskedEcho()
	return c, nil
}

// RelayBound is a relay's answer to a bind it accepted.
type RelayBound struct {
	Ticket   []byte         // crypto.TicketSize bytes
	Observed netip.AddrPort // the peer's address as the relay saw it
	Expiry   time.Time      // of the ticket, to the second
	// Cookie is a fresh cookie for Observed, for the next bind.
	Cookie crypto.Cookie
	Echo   Echo
}

// AppendRelayBound appends a relay's answer to a bind; r.Ticket must hold
// crypto.TicketSize bytes.
func AppendRelayBound(out []byte, r RelayBound) []byte {
	out = append(out, TypeRelayBound, BindVersion)
	out = append(out, r.Ticket[:crypto.TicketSize]...)
	out = AppendAddr(out, r.Observed)
	out = binary.BigEndian.AppendUint64(out, uint64(r.Expiry.Unix()))
	out = append(out, r.Cookie[:]...)
	return append(out, r.Echo[:]...)
}

// ParseRelayBound decodes a relay's answer to a bind. The ticket is copied.
func ParseRelayBound(b []byte) (RelayBound, error) {
	var r RelayBound
	t, err := Header(b)
	if err != nil {
		return r, err
	}
	if t != TypeRelayBound {
		return r, fmt.Errorf("%w: frame type %#x is not relay-bound", ErrMalformed, t)
	}
	if len(b) != RelayBoundLen {
		return r, ErrShort
	}
	off := HeaderLen + crypto.TicketSize
	obs, err := ParseAddr(b[off:])
	if err != nil {
		return r, err
	}
	r.Ticket = append([]byte(nil), b[HeaderLen:off]...)
	r.Observed = obs
	off += AddrLen
	r.Expiry = time.Unix(int64(binary.BigEndian.Uint64(b[off:])), 0)
	off += 8
	copy(r.Cookie[:], b[off:])
	copy(r.Echo[:], b[off+crypto.CookieSize:])
	return r, nil
}
