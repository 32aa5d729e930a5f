package crypto

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"net/netip"
	"sync"
	"time"
)

// CookieSize is the size of an address-validation cookie.
const CookieSize = 16

// CookieWindow is how long one cookie period lasts; a cookie is accepted in
// its own period and the next, so it lives between one and two windows.
const CookieWindow = 60 * time.Second

// Cookie is a stateless address-validation token: a MAC over the client's
// address and the time period under a secret the server instances share.
type Cookie [CookieSize]byte

// CookieJar makes and checks cookies. It keeps no per-client state.
type CookieJar struct {
	secret []byte
	now    func() time.Time
	macs   sync.Pool // of *macState
}

// NewCookieJar returns a jar keyed by secret (at least 16 bytes). now
// defaults to time.Now.
func NewCookieJar(secret []byte, now func() time.Time) *CookieJar {
	if now == nil {
		now = time.Now
	}
	return &CookieJar{secret: append([]byte(nil), secret...), now: now}
}

// macState is a keyed HMAC and its buffers, pooled so that making and
// checking cookies does not allocate.
type macState struct {
	h   hash.Hash
	in  [16 + 2 + 8]byte
	sum [sha256.Size]byte
}

func (j *CookieJar) mac(addr netip.AddrPort, period int64) Cookie {
	st, _ := j.macs.Get().(*macState)
	if st == nil {
		st = &macState{h: hmac.New(sha256.New, j.secret)}
	}
	a := addr.Addr().Unmap().As16()
	copy(st.in[:16], a[:])
	binary.BigEndian.PutUint16(st.in[16:], addr.Port())
	binary.BigEndian.PutUint64(st.in[18:], uint64(period))
	st.h.Reset()
	st.h.Write(st.in[:])
	var c Cookie
	copy(c[:], st.h.Sum(st.sum[:0]))
	j.macs.Put(st)
	return c
}

func (j *CookieJar) period() int64 { return j.now().Unix() / int64(CookieWindow/time.Second) }

// Make returns the cookie for addr in the current period.
func (j *CookieJar) Make(addr netip.AddrPort) Cookie { return j.mac(addr, j.period()) }

// Check reports whether c is a valid cookie for addr, made in this period or
// the one before.
func (j *CookieJar) Check(addr netip.AddrPort, c Cookie) bool {
	p := j.period()
	if a := j.mac(addr, p); hmac.Equal(a[:], c[:]) {
		return true
	}
	b := j.mac(addr, p-1)
	return hmac.Equal(b[:], c[:])
}

// Previous returns the cookie for addr of the period before this one, which
// Check still accepts.
func (j *CookieJar) Previous(addr netip.AddrPort) Cookie { return j.mac(addr, j.period()-1) }
