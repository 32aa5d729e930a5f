package turnrelay

import "encoding/binary"

// A few facts about STUN messages (RFC 8489 section 5) that the guard on
// the server's sockets needs before pion sees a datagram, and before one it
// wrote leaves. Pure functions over byte slices.
const (
	stunHeaderLen = 20
	magicCookie   = 0x2112A442

	// Classes, as stunClass returns them.
	classRequest    = 0
	classIndication = 1
	classSuccess    = 2
	classError      = 3

	// Methods, as stunMethod returns them.
	methodBinding     = 0x001
	methodAllocate    = 0x003
	methodChannelBind = 0x009

	attrMessageIntegrity       = 0x0008
	attrErrorCode              = 0x0009
	attrNonce                  = 0x0015
	attrMessageIntegritySHA256 = 0x001C

	codeUnauthorized = 401
	codeForbidden    = 403
	codeStaleNonce   = 438
)

// stunMessage is a STUN message's header fields; ok is false when b is not
// one STUN message (bad first bits, cookie or length).
type stunMessage struct {
	typ  uint16
	txid [12]byte
	ok   bool
}

// parseSTUN reads b's header. The declared length must cover b exactly and
// be a multiple of four.
func parseSTUN(b []byte) stunMessage {
	if len(b) < stunHeaderLen || b[0]&0xC0 != 0 || binary.BigEndian.Uint32(b[4:8]) != magicCookie {
		return stunMessage{}
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n%4 != 0 || stunHeaderLen+n != len(b) {
		return stunMessage{}
	}
	m := stunMessage{typ: binary.BigEndian.Uint16(b[0:2]), ok: true}
	copy(m.txid[:], b[8:20])
	return m
}

// parseAsPion reads b's header as pion's server does before it answers:
// anything that is not ChannelData, with the magic cookie and at least the
// declared length, is a STUN message, whatever the type's two top bits
// and whatever follows the declared length. The guard must count every
// request pion will answer, so it reads requests this way, not with the
// stricter parseSTUN.
func parseAsPion(b []byte) stunMessage {
	if len(b) < stunHeaderLen || isChannelData(b) || binary.BigEndian.Uint32(b[4:8]) != magicCookie ||
		stunHeaderLen+int(binary.BigEndian.Uint16(b[2:4])) > len(b) {
		return stunMessage{}
	}
	m := stunMessage{typ: binary.BigEndian.Uint16(b[0:2]) &^ 0xC000, ok: true}
	copy(m.txid[:], b[8:20])
	return m
}

// isChannelData is pion's test for a ChannelData frame: a channel number
// in 0x4000-0x7FFF and a length the datagram holds.
func isChannelData(b []byte) bool {
	if len(b) < 4 || int(binary.BigEndian.Uint16(b[2:4])) > len(b)-4 {
		return false
	}
	n := binary.BigEndian.Uint16(b[0:2])
	return n >= 0x4000 && n <= 0x7FFF
}

func (m stunMessage) class() int { return int((m.typ>>4)&1 | (m.typ>>7)&2) }

func (m stunMessage) method() int {
	return int(m.typ&0x000F | (m.typ>>1)&0x0070 | (m.typ>>2)&0x0F80)
}

// findAttr returns the offset of the value of b's first attribute of type t
// and its length, walking the attributes of a message parseSTUN accepted.
func findAttr(b []byte, t uint16) (off, n int, ok bool) {
	for i := stunHeaderLen; i+4 <= len(b); {
		at := binary.BigEndian.Uint16(b[i : i+2])
		l := int(binary.BigEndian.Uint16(b[i+2 : i+4]))
		if i+4+l > len(b) {
			return 0, 0, false
		}
		if at == t {
			return i + 4, l, true
		}
		i += 4 + (l+3)&^3
	}
	return 0, 0, false
}

// errorCode returns the ERROR-CODE of message b, or 0.
func errorCode(b []byte) int {
	off, n, ok := findAttr(b, attrErrorCode)
	if !ok || n < 4 {
		return 0
	}
	return int(b[off+2]&0x07)*100 + int(b[off+3])
}

// authenticated reports whether b carries a MESSAGE-INTEGRITY: pion adds
// one only to answers to requests whose own integrity it verified.
func authenticated(b []byte) bool {
	if _, _, ok := findAttr(b, attrMessageIntegrity); ok {
		return true
	}
	_, _, ok := findAttr(b, attrMessageIntegritySHA256)
	return ok
}

// forbidChannelBind rewrites, in place, pion's answer to a ChannelBind for
// a peer the permission handler refused (a 401 without a NONCE, which
// clients would take for an authentication failure) into the 403 Forbidden
// RFC 8656 section 11.2 names for it. It reports whether it did; other
// messages are left alone.
func forbidChannelBind(b []byte) bool {
	m := parseSTUN(b)
	if !m.ok || m.class() != classError || m.method() != methodChannelBind || errorCode(b) != codeUnauthorized {
		return false
	}
	if _, _, ok := findAttr(b, attrNonce); ok {
		return false
	}
	off, _, _ := findAttr(b, attrErrorCode)
	b[off+2] = b[off+2]&^0x07 | codeForbidden/100
	b[off+3] = codeForbidden % 100
	return true
}
