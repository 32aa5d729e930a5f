package crypto

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
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
}

// NewCookieJar returns a jar keyed by secret (at least 16 bytes). now
// defaults to time.Now.
func NewCookieJar(secret []byte, now func() time.Time) *CookieJar {
	if now == nil {
		now = time.Now
	}
	return &CookieJar{secret: append([]byte(nil), secret...), now: now}
}

func (j *CookieJar) mac(addr netip.AddrPort, period int64) Cookie {
	m := hmac.New(sha256.New, j.secret)
	var b [16 + 2 + 8]byte
	a := addr.Addr().Unmap().As16()
	copy(b[:16], a[:])
	binary.BigEndian.PutUint16(b[16:], addr.Port())
	binary.BigEndian.PutUint64(b[18:], uint64(period))
	m.Write(b[:])
	var c Cookie
	copy(c[:], m.Sum(nil))
	return c
}

func (j *CookieJar) period() int64 { return j.now().Unix() / int64(CookieWindow/time.Second) }

// Make returns the cookie for addr in the current period.
func (j *CookieJar) Make(addr netip.AddrPort) Cookie { return j.mac(addr, j.period()) }

// Check reports whether c is a valid cookie for addr, made in this period or
// the one before.
func (j *CookieJar) Check(addr netip.AddrPort, c Cookie) bool {
	p := j.period()
	a, b := j.mac(addr, p), j.mac(addr, p-1)
	return hmac.Equal(a[:], c[:]) || hmac.Equal(b[:], c[:])
}
