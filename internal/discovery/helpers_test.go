package discovery

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"

	"github.com/keymesh/keymesh/internal/testutil/testclock"
	"github.com/keymesh/keymesh/internal/wire"
)

// randRecord returns a record with random fields of every kind the codec
// knows.
func randRecord(r *rand.Rand) Record {
	var rec Record
	fillID(r, &rec.ID)
	rec.Reflexive = randAddrPort(r)
	if n := r.IntN(4); n > 0 {
		rec.Candidates = make([]netip.AddrPort, n)
		for i := range rec.Candidates {
			rec.Candidates[i] = randAddrPort(r)
		}
	}
	if n := r.IntN(3); n > 0 {
		rec.Tickets = make([][]byte, n)
		for i := range rec.Tickets {
			rec.Tickets[i] = make([]byte, 1+r.IntN(120))
			fillBytes(r, rec.Tickets[i])
		}
	}
	rec.NAT = wire.NAT(r.IntN(256))
	if r.IntN(2) == 0 {
		rec.Policy.AllowAny = true
	} else if n := r.IntN(4); n > 0 {
		rec.Policy.Allowed = make([]crypto.PeerID, n)
		for i := range rec.Policy.Allowed {
			fillID(r, &rec.Policy.Allowed[i])
		}
	}
	if r.IntN(4) > 0 {
		rec.Instance = "rdv-" + string(rune('a'+r.IntN(26)))
	}
	if r.IntN(2) == 0 {
		rec.Home = randAddrPort(r)
	}
	if r.IntN(8) > 0 {
		rec.Updated = time.Unix(1_800_000_000+r.Int64N(1e6), r.Int64N(1e9)).UTC()
	}
	if r.IntN(4) > 0 {
		rec.Sent = time.UnixMilli(1_800_000_000_000 + r.Int64N(1e9)).UTC()
	}
	return rec
}

func fillID(r *rand.Rand, id *crypto.PeerID) { fillBytes(r, id[:]) }

func fillBytes(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

func randAddrPort(r *rand.Rand) netip.AddrPort {
	port := uint16(r.IntN(65536))
	switch r.IntN(4) {
	case 0:
		return netip.AddrPort{}
	case 1:
		var a [16]byte
		fillBytes(r, a[:])
		return netip.AddrPortFrom(netip.AddrFrom16(a), port)
	case 2:
		var a [4]byte
		fillBytes(r, a[:])
		return netip.AddrPortFrom(netip.AddrFrom16(netip.AddrFrom4(a).As16()), port) // 4in6
	default:
		var a [4]byte
		fillBytes(r, a[:])
		return netip.AddrPortFrom(netip.AddrFrom4(a), port)
	}
}

// sameRecord reports whether a and b hold the same registration (nil and
// empty slices alike, times compared as instants).
func sameRecord(a, b Record) bool {
	return a.ID == b.ID && a.Reflexive == b.Reflexive && a.NAT == b.NAT &&
		a.Policy.AllowAny == b.Policy.AllowAny &&
		slices.Equal(a.Policy.Allowed, b.Policy.Allowed) &&
		slices.Equal(a.Candidates, b.Candidates) &&
		slices.EqualFunc(a.Tickets, b.Tickets, bytes.Equal) &&
		a.Instance == b.Instance && a.Home == b.Home && a.Updated.Equal(b.Updated) &&
		a.Sent.Equal(b.Sent)
}

// newFakeClock is a settable clock for tests.
func newFakeClock() *testclock.Clock {
	return testclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
}
