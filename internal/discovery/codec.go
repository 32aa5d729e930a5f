package discovery

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"

	"github.com/keymesh/keymesh/internal/wire"
)

// The stored form of a Record, shared by Memory (inside its arenas) and Redis
// (as the value of a peer's key). All integers are little endian; counts and
// lengths are unsigned varints.
//
//	version   1 byte   recordVersion
//	flags     1 byte   bit 0: Policy.AllowAny; other bits zero
//	nat       1 byte   Record.NAT
//	id        32 bytes Record.ID
//	updated   8 bytes  Record.Updated as Unix nanoseconds; 0 = zero time
//	reflexive addrport
//	ncand     varint, then ncand x addrport
//	ntick     varint, then ntick x (varint length, bytes)
//	nallow    varint, then nallow x 32-byte peer ID
//	instance  varint length, bytes
//	home      addrport (since 1.1; absent in older records: the zero AddrPort)
//	sent      8 bytes  Record.Sent as Unix milliseconds; 0 = zero time
//	          (since 1.2; absent in older records: the zero time)
//
// addrport is one kind byte then the address and a 2-byte port:
// 0 = none (the zero AddrPort, nothing follows), 4 = IPv4 (4+2 bytes),
// 6 = IPv6 (16+2 bytes; IPv4-mapped addresses stay mapped). IPv6 zones are
// not stored: they mean nothing on another host.
//
// Changelog and evolution rule: version 1 is the first; 1.1 appends home
// (same version byte: older readers ignore it, and a record without it
// decodes with no home); 1.2 appends sent, the same way (a record without
// it decodes with no send time, which any Put may replace). A compatible
// addition appends fields after instance; readers ignore bytes they do not
// know, so instances of mixed versions share one store. An incompatible
// change bumps the version byte, and older readers report ErrBadRecord.
const recordVersion = 1

// MaxRecordSize bounds the encoded size of one record (it must fit the
// 16-bit length Memory keeps per entry). Real records are a few hundred
// bytes.
const MaxRecordSize = 1<<16 - 1

const (
	flagAllowAny = 1 << 0

	addrNone = 0
	addrV4   = 4
	addrV6   = 6

	// fixedHeader is version, flags, nat, id and updated.
	fixedHeader = 3 + 32 + 8
	// offID is where the peer ID sits in an encoded record.
	offID = 3
)

// appendRecord appends the stored form of rec to dst.
func appendRecord(dst []byte, rec Record) ([]byte, error) {
	start := len(dst)
	var flags byte
	if rec.Policy.AllowAny {
		flags |= flagAllowAny
	}
	dst = append(dst, recordVersion, flags, byte(rec.NAT))
	dst = append(dst, rec.ID[:]...)
	var upd int64
	if !rec.Updated.IsZero() {
		upd = rec.Updated.UnixNano()
	}
	dst = binary.LittleEndian.AppendUint64(dst, uint64(upd))
	dst = appendAddrPort(dst, rec.Reflexive)
	dst = binary.AppendUvarint(dst, uint64(len(rec.Candidates)))
	for _, c := range rec.Candidates {
		dst = appendAddrPort(dst, c)
	}
	dst = binary.AppendUvarint(dst, uint64(len(rec.Tickets)))
	for _, t := range rec.Tickets {
		dst = binary.AppendUvarint(dst, uint64(len(t)))
		dst = append(dst, t...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(rec.Policy.Allowed)))
	for _, a := range rec.Policy.Allowed {
		dst = append(dst, a[:]...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(rec.Instance)))
	dst = append(dst, rec.Instance...)
	dst = appendAddrPort(dst, rec.Home)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(sentMillis(rec.Sent)))
	if n := len(dst) - start; n > MaxRecordSize {
		return dst[:start], fmt.Errorf("record of %d bytes exceeds %d: %w", n, MaxRecordSize, ErrInvalid)
	}
	return dst, nil
}

func appendAddrPort(dst []byte, ap netip.AddrPort) []byte {
	a := ap.Addr()
	switch {
	case !a.IsValid():
		return append(dst, addrNone)
	case a.Is4():
		b := a.As4()
		dst = append(dst, addrV4)
		dst = append(dst, b[:]...)
	default:
		b := a.As16()
		dst = append(dst, addrV6)
		dst = append(dst, b[:]...)
	}
	return binary.LittleEndian.AppendUint16(dst, ap.Port())
}

// recordID returns the peer ID of an encoded record without decoding the
// rest, or false when b is too short or of an unknown version.
func recordID(b []byte) (crypto.PeerID, bool) {
	var id crypto.PeerID
	if len(b) < fixedHeader || b[0] != recordVersion {
		return id, false
	}
	copy(id[:], b[offID:])
	return id, true
}

// decodeRecord parses the stored form of a record. The returned tickets
// alias b: the caller must not modify b afterwards.
func decodeRecord(b []byte) (Record, error) {
	var rec Record
	if len(b) < 1 {
		return rec, fmt.Errorf("empty value: %w", ErrBadRecord)
	}
	if b[0] != recordVersion {
		return rec, fmt.Errorf("record version %d, this build reads %d: %w", b[0], recordVersion, ErrBadRecord)
	}
	if len(b) < fixedHeader {
		return rec, fmt.Errorf("record of %d bytes is shorter than its %d-byte header: %w", len(b), fixedHeader, ErrBadRecord)
	}
	d := decoder{b: b[fixedHeader:]}
	flags := b[1]
	if flags&^flagAllowAny != 0 {
		return rec, fmt.Errorf("unknown flags %#x: %w", flags, ErrBadRecord)
	}
	rec.Policy.AllowAny = flags&flagAllowAny != 0
	rec.NAT = wire.NAT(b[2])
	copy(rec.ID[:], b[offID:])
	if upd := int64(binary.LittleEndian.Uint64(b[offID+32:])); upd != 0 {
		rec.Updated = time.Unix(0, upd).UTC()
	}
	rec.Reflexive = d.addrPort()
	if n := d.count(1); n > 0 {
		rec.Candidates = make([]netip.AddrPort, n)
		for i := range rec.Candidates {
			rec.Candidates[i] = d.addrPort()
		}
	}
	if n := d.count(1); n > 0 {
		rec.Tickets = make([][]byte, n)
		for i := range rec.Tickets {
			rec.Tickets[i] = d.bytes()
		}
	}
	if n := d.count(32); n > 0 {
		rec.Policy.Allowed = make([]crypto.PeerID, n)
		for i := range rec.Policy.Allowed {
			copy(rec.Policy.Allowed[i][:], d.take(32))
		}
	}
	rec.Instance = string(d.bytes())
	if d.err == nil && len(d.b) > 0 {
		rec.Home = d.addrPort()
	}
	if d.err == nil && len(d.b) > 0 {
		if v := d.take(8); v != nil {
			if ms := int64(binary.LittleEndian.Uint64(v)); ms > 0 {
				rec.Sent = time.UnixMilli(ms).UTC()
			}
		}
	}
	if d.err != nil {
		return Record{}, d.err
	}
	// Bytes after sent are fields of a newer compatible version.
	return rec, nil
}

// sentMillis is the stored form of Record.Sent: Unix milliseconds, 0 for
// the zero time (and for times before 1970, which no clock window admits).
func sentMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(t.UnixMilli(), 0)
}

// recordSent returns the sent field of an encoded record (0 when it has
// none: a record from before 1.2, or one Put without a send time) without
// decoding the rest or allocating. A record it cannot walk has none.
func recordSent(b []byte) int64 {
	if len(b) < fixedHeader || b[0] != recordVersion {
		return 0
	}
	d := decoder{b: b[fixedHeader:]}
	d.addrPort()
	for n := d.count(1); n > 0; n-- {
		d.addrPort()
	}
	for n := d.count(1); n > 0; n-- {
		d.bytes()
	}
	d.take(32 * d.count(32))
	d.bytes()
	if d.err != nil || len(d.b) == 0 {
		return 0
	}
	d.addrPort()
	if d.err != nil || len(d.b) < 8 {
		return 0
	}
	return max(int64(binary.LittleEndian.Uint64(d.b)), 0)
}

// decoder reads fields from b; after the first error every read returns a
// zero value and err keeps the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("truncated or malformed %s: %w", what, ErrBadRecord)
	}
	d.b = nil
}

func (d *decoder) take(n int) []byte {
	if d.err != nil || n > len(d.b) {
		d.fail("field")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads an element count and checks it against the bytes left, each
// element taking at least min bytes, so a forged count cannot make the
// decoder allocate more than the input justifies.
func (d *decoder) count(min int) int {
	v := d.uvarint()
	if v > uint64(len(d.b)/min) {
		d.fail("count")
		return 0
	}
	return int(v)
}

func (d *decoder) bytes() []byte {
	n := d.count(1)
	return d.take(n)
}

func (d *decoder) addrPort() netip.AddrPort {
	k := d.take(1)
	if k == nil {
		return netip.AddrPort{}
	}
	var a netip.Addr
	switch k[0] {
	case addrNone:
		return netip.AddrPort{}
	case addrV4:
		if b := d.take(4); b != nil {
			a = netip.AddrFrom4([4]byte(b))
		}
	case addrV6:
		if b := d.take(16); b != nil {
			a = netip.AddrFrom16([16]byte(b))
		}
	default:
		d.fail("address kind")
		return netip.AddrPort{}
	}
	p := d.take(2)
	if p == nil || !a.IsValid() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, binary.LittleEndian.Uint16(p))
}
