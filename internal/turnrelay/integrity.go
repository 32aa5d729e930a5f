package turnrelay

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/binary"
	"hash"
	"net/netip"
	"sync"
)

// The guard's own check of a request's MESSAGE-INTEGRITY (RFC 8489 section
// 14.5), before pion: a request whose integrity does not verify is dropped
// unanswered, so a flood of requests with a valid nonce and a wrong
// integrity from spoofed sources costs the server a parse, a key and two
// HMACs each, within a global budget, and never costs pion a decode, a
// nonce check or an answer.

const (
	attrUsername = 0x0006
	attrRealm    = 0x0014
	// miLen is the length of a MESSAGE-INTEGRITY value (HMAC-SHA1).
	miLen = 20
)

// authFields are what the guard reads from a request to check its
// MESSAGE-INTEGRITY: slices of the message, nothing copied.
type authFields struct {
	username, realm []byte
	// mi is the MESSAGE-INTEGRITY value; miOff the offset of its
	// attribute header, where the HMAC's input ends.
	mi    []byte
	miOff int
}

// parseAuth reads b's USERNAME, REALM and MESSAGE-INTEGRITY as pion's
// decoder does: the attributes the declared length covers, each padded to
// four bytes, the first of each type counting, none after
// MESSAGE-INTEGRITY or after a MESSAGE-INTEGRITY-SHA256 before it. ok is false when b is not a
// STUN message pion can decode; a decodable message without
// MESSAGE-INTEGRITY has a nil f.mi. It allocates nothing.
func parseAuth(b []byte) (f authFields, ok bool) {
	if len(b) < stunHeaderLen || binary.BigEndian.Uint32(b[4:8]) != magicCookie {
		return authFields{}, false
	}
	end := stunHeaderLen + int(binary.BigEndian.Uint16(b[2:4]))
	if end > len(b) {
		return authFields{}, false
	}
	seenSHA256 := false
	for i := stunHeaderLen; i < end; {
		if end-i < 4 {
			return authFields{}, false
		}
		t := binary.BigEndian.Uint16(b[i : i+2])
		l := int(binary.BigEndian.Uint16(b[i+2 : i+4]))
		if end-i-4 < (l+3)&^3 {
			return authFields{}, false
		}
		v := b[i+4 : i+4+l]
		switch {
		case f.mi != nil || seenSHA256:
			// pion drops what follows an integrity attribute (but
			// FINGERPRINT and, after MESSAGE-INTEGRITY, its SHA256 twin).
		case t == attrUsername && f.username == nil:
			f.username = v
		case t == attrRealm && f.realm == nil:
			f.realm = v
		case t == attrMessageIntegrity:
			f.mi, f.miOff = v, i
		case t == attrMessageIntegritySHA256:
			seenSHA256 = true
		}
		i += 4 + (l+3)&^3
	}
	return f, true
}

// integrityValid reports whether f.mi, from message b, is the HMAC-SHA1
// with key over b up to the attribute, with the header's length covering
// the attribute (RFC 8489 section 14.5), as pion checks it. It computes the
// HMAC (RFC 2104) with pooled digests, allocating nothing.
func integrityValid(b []byte, f authFields, key []byte) bool {
	if len(f.mi) != miLen || f.miOff < stunHeaderLen || len(key) > sha1.BlockSize {
		return false
	}
	d := hmacPool.Get().(*hmacSHA1)
	defer hmacPool.Put(d)
	var pad [sha1.BlockSize]byte
	copy(pad[:], key)
	for i := range pad {
		pad[i] ^= 0x36
	}
	var hdr [stunHeaderLen]byte
	copy(hdr[:], b[:stunHeaderLen])
	binary.BigEndian.PutUint16(hdr[2:4], uint16(f.miOff+4+miLen-stunHeaderLen))
	d.inner.Reset()
	d.inner.Write(pad[:])
	d.inner.Write(hdr[:])
	d.inner.Write(b[stunHeaderLen:f.miOff])
	var sum [sha1.Size]byte
	d.inner.Sum(sum[:0])
	for i := range pad {
		pad[i] ^= 0x36 ^ 0x5c
	}
	d.outer.Reset()
	d.outer.Write(pad[:])
	d.outer.Write(sum[:])
	return hmac.Equal(d.outer.Sum(sum[:0]), f.mi)
}

// hmacSHA1 are the two digests of an HMAC-SHA1.
type hmacSHA1 struct{ inner, outer hash.Hash }

var hmacPool = sync.Pool{New: func() any { return &hmacSHA1{inner: sha1.New(), outer: sha1.New()} }}

// Reasons the guard drops a request for its MESSAGE-INTEGRITY before pion
// sees it: the reasons of keymesh_turn_auth_failures_total, and one of
// keymesh_turn_dropped_total.
const (
	reasonNoUsername = "no-username"      // MESSAGE-INTEGRITY without USERNAME or REALM
	dropIntegrity    = "integrity-budget" // no integrity check left in the global budget
)

// checkIntegrity reports whether request b (fields f) from src carries a
// MESSAGE-INTEGRITY that verifies with the long-term key of its user name,
// derived as the AuthHandler derives it (longTermKey). Sources that
// passed recently are checked without the global budget; others take one
// check from it, or are dropped. Failures are counted, not answered.
func (s *Server) checkIntegrity(b []byte, f authFields, src netip.AddrPort) bool {
	now := s.nowNano()
	if !s.verified.has(src, now) && !s.integrity.Allow(now) {
		s.metrics.droppedIntegrity.Inc()
		return false
	}
	if f.username == nil || f.realm == nil {
		s.metrics.guardAuthFailures[reasonNoUsername].Inc()
		return false
	}
	_, key, reason := s.longTermKey(string(f.username), string(f.realm))
	if reason == "" && !integrityValid(b, f, key) {
		reason = reasonIntegrity
	}
	if reason != "" {
		s.metrics.guardAuthFailures[reason].Inc()
		return false
	}
	s.verified.add(src, now)
	return true
}

// verifiedSources is a bounded table of the sources (address and port)
// whose requests' integrity verified within the last ttl: their requests
// are checked without the global budget. When full it forgets expired
// entries, then arbitrary ones (down to 7/8 of its size); it never
// refuses.
type verifiedSources struct {
	ttl int64 // ns
	max int
	mu  sync.Mutex
	m   map[netip.AddrPort]int64 // source -> expiry (Unix ns)
}

func newVerifiedSources(ttl int64, maxLen int) *verifiedSources {
	return &verifiedSources{ttl: ttl, max: maxLen, m: make(map[netip.AddrPort]int64)}
}

func (v *verifiedSources) has(src netip.AddrPort, now int64) bool {
	v.mu.Lock()
	exp, ok := v.m[src]
	v.mu.Unlock()
	return ok && now < exp
}

func (v *verifiedSources) add(src netip.AddrPort, now int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.m[src]; !ok && len(v.m) >= v.max {
		for k, exp := range v.m {
			if exp <= now {
				delete(v.m, k)
			}
		}
		for k := range v.m { // down to 7/8, so the scans are rare
			if len(v.m) <= v.max-v.max/8-1 {
				break
			}
			delete(v.m, k)
		}
	}
	v.m[src] = now + v.ttl
}

func (v *verifiedSources) len() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.m)
}
