package wire

import (
	"encoding/binary"
	"net/netip"

	"github.com/keymesh/keymesh/internal/crypto"
)

// Limits on list fields, so no decoder allocates in proportion to a count an
// attacker chose.
const (
	MaxCandidates = 16
	MaxTickets    = 4
	MaxAllowed    = 32
	MaxString     = 255
	MaxBytes      = 255
)

// AddrLen is the encoded size of an address and port: IPv6 (IPv4 mapped) and
// port, big-endian.
const AddrLen = 18

// AppendAddr appends the 18-byte form of a.
func AppendAddr(b []byte, a netip.AddrPort) []byte {
	ip := a.Addr().As16()
	b = append(b, ip[:]...)
	return binary.BigEndian.AppendUint16(b, a.Port())
}

// ParseAddr decodes the 18-byte form of an address. The unspecified
// address with port 0 decodes as the zero AddrPort.
func ParseAddr(b []byte) (netip.AddrPort, error) {
	if len(b) < AddrLen {
		return netip.AddrPort{}, ErrShort
	}
	var ip [16]byte
	copy(ip[:], b[:16])
	port := binary.BigEndian.Uint16(b[16:18])
	a := netip.AddrFrom16(ip).Unmap()
	if a.IsUnspecified() && port == 0 {
		return netip.AddrPort{}, nil
	}
	return netip.AddrPortFrom(a, port), nil
}

// writer appends fields to a buffer.
type writer struct{ b []byte }

func (w *writer) u8(v byte)             { w.b = append(w.b, v) }
func (w *writer) u16(v uint16)          { w.b = binary.BigEndian.AppendUint16(w.b, v) }
func (w *writer) u64(v uint64)          { w.b = binary.BigEndian.AppendUint64(w.b, v) }
func (w *writer) raw(v []byte)          { w.b = append(w.b, v...) }
func (w *writer) id(v crypto.PeerID)    { w.b = append(w.b, v[:]...) }
func (w *writer) addr(a netip.AddrPort) { w.b = AppendAddr(w.b, a) }
func (w *writer) bool(v bool) {
	if v {
		w.u8(1)
	} else {
		w.u8(0)
	}
}

// str writes a length-prefixed string, cut to MaxString bytes.
func (w *writer) str(s string) {
	if len(s) > MaxString {
		s = s[:MaxString]
	}
	w.u8(byte(len(s)))
	w.b = append(w.b, s...)
}

func (w *writer) bytes(v []byte) {
	if len(v) > MaxBytes {
		v = v[:MaxBytes]
	}
	w.u8(byte(len(v)))
	w.b = append(w.b, v...)
}

func (w *writer) addrs(as []netip.AddrPort) {
	if len(as) > MaxCandidates {
		as = as[:MaxCandidates]
	}
	w.u8(byte(len(as)))
	for _, a := range as {
		w.addr(a)
	}
}

func (w *writer) tickets(ts [][]byte) {
	if len(ts) > MaxTickets {
		ts = ts[:MaxTickets]
	}
	w.u8(byte(len(ts)))
	for _, t := range ts {
		w.bytes(t)
	}
}

func (w *writer) strs(ss []string) {
	if len(ss) > MaxCandidates {
		ss = ss[:MaxCandidates]
	}
	w.u8(byte(len(ss)))
	for _, s := range ss {
		w.str(s)
	}
}

// epoch appends an optional trailing boot epoch: nothing for 0.
func (w *writer) epoch(v uint64) {
	if v != 0 {
		w.u64(v)
	}
}

// reader consumes fields; the first failure sticks in err and every later
// read returns zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) need(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = ErrShort
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() byte {
	if v := r.need(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.need(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.need(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (r *reader) bool() bool {
	v := r.u8()
	if v > 1 && r.err == nil {
		r.err = ErrMalformed
	}
	return v == 1
}

func (r *reader) id() crypto.PeerID {
	var id crypto.PeerID
	if v := r.need(32); v != nil {
		copy(id[:], v)
	}
	return id
}

func (r *reader) addr() netip.AddrPort {
	v := r.need(AddrLen)
	if v == nil {
		return netip.AddrPort{}
	}
	a, _ := ParseAddr(v)
	return a
}

func (r *reader) str() string {
	n := int(r.u8())
	if v := r.need(n); v != nil {
		return string(v)
	}
	return ""
}

func (r *reader) bytes() []byte {
	n := int(r.u8())
	if v := r.need(n); v != nil {
		return append([]byte(nil), v...)
	}
	return nil
}

func (r *reader) count(max int) int {
	n := int(r.u8())
	if n > max && r.err == nil {
		r.err = ErrMalformed
		return 0
	}
	return n
}

func (r *reader) addrs() []netip.AddrPort {
	n := r.count(MaxCandidates)
	if n == 0 {
		return nil
	}
	out := make([]netip.AddrPort, 0, n)
	for i := 0; i < n && r.err == nil; i++ {
		out = append(out, r.addr())
	}
	return out
}

func (r *reader) tickets() [][]byte {
	n := r.count(MaxTickets)
	if n == 0 {
		return nil
	}
	out := make([][]byte, 0, n)
	for i := 0; i < n && r.err == nil; i++ {
		out = append(out, r.bytes())
	}
	return out
}

func (r *reader) strs() []string {
	n := r.count(MaxCandidates)
	if n == 0 {
		return nil
	}
	out := make([]string, 0, n)
	for i := 0; i < n && r.err == nil; i++ {
		out = append(out, r.str())
	}
	return out
}

// done fails on trailing bytes.
// epoch reads an optional trailing boot epoch: 0 when the message ends
// here, else exactly the 8 bytes that end it (a 0 on the wire is malformed:
// writers omit it).
func (r *reader) epoch() uint64 {
	if r.err != nil || len(r.b) == 0 {
		return 0
	}
	if len(r.b) != 8 {
		r.err = ErrMalformed
		return 0
	}
	v := r.u64()
	if v == 0 {
		r.err = ErrMalformed
	}
	return v
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = ErrMalformed
	}
	return r.err
}
