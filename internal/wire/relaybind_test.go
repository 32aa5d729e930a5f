package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
)

func TestRelayBind(t *testing.T) {
	id := ident(t)
	now := time.UnixMilli(1700000000000)
	cookie := crypto.Cookie{1, 2, 3, 15: 9}
	b := AppendRelayBind(nil, id, now, cookie)
	if len(b) != RelayBindLen || RelayBoundLen > len(b) || RelayChallengeLen > len(b) {
		t.Fatalf("bind %d bytes, bound %d, challenge %d: no answer may be larger", len(b), RelayBoundLen, RelayChallengeLen)
	}
	if b[1] != BindVersion || BindVersion == Version {
		t.Fatalf("bind carries version %d, want %d", b[1], BindVersion)
	}
	got, err := ParseRelayBind(b)
	if err != nil || got.ID != id.ID() || !got.Time.Equal(now) || got.Cookie != cookie {
		t.Fatalf("parse bind: %+v %v", got, err)
	}
	if !bytes.Equal(got.Echo[:], b[bindSigOff:bindSigOff+EchoLen]) {
		t.Fatal("echo is not the signature's start")
	}
	// The signature covers the cookie.
	c := bytes.Clone(b)
	c[bindCookieOff] ^= 1
	if _, err := ParseRelayBind(c); !errors.Is(err, crypto.ErrOpen) {
		t.Fatalf("bind with a changed cookie: %v, want a signature error", err)
	}
	if p, err := PeekRelayBind(c); err != nil || p.Cookie == cookie {
		t.Fatalf("peek does not check the signature: %v", err)
	}
	old := bytes.Clone(b)
	old[1] = Version
	if _, err := PeekRelayBind(old); !errors.Is(err, ErrVersion) {
		t.Fatalf("version-1 bind: %v, want ErrVersion", err)
	}
	if _, err := PeekRelayBind(b[:RelayBindLen-1]); !errors.Is(err, ErrShort) {
		t.Fatalf("short bind: %v, want ErrShort", err)
	}
}

func TestRelayChallengeAndBound(t *testing.T) {
	ch := RelayChallenge{Cookie: crypto.Cookie{7, 15: 1}, Echo: Echo{1, 2, 3, 4, 5, 6, 7, 8}}
	cb := AppendRelayChallenge(nil, ch)
	if len(cb) != RelayChallengeLen {
		t.Fatalf("challenge of %d bytes, want %d", len(cb), RelayChallengeLen)
	}
	if got, err := ParseRelayChallenge(cb); err != nil || got != ch {
		t.Fatalf("challenge: %+v %v", got, err)
	}
	// On the wire the echo is masked with the cookie: a forged bind picks
	// its "signature", not the bytes the relay sends back.
	if bytes.Contains(cb, ch.Echo[:]) {
		t.Fatal("the challenge carries the bind's echo in the clear")
	}
	if _, err := ParseRelayChallenge(append(cb, 0)); !errors.Is(err, ErrShort) {
		t.Fatalf("long challenge: %v", err)
	}
	bd := RelayBound{
		Ticket:   bytes.Repeat([]byte{3}, crypto.TicketSize),
		Observed: netip.MustParseAddrPort("198.51.100.4:777"),
		Expiry:   time.Unix(1800000000, 0),
		Cookie:   crypto.Cookie{5},
		Echo:     Echo{9},
	}
	bb := AppendRelayBound(nil, bd)
	if len(bb) != RelayBoundLen {
		t.Fatalf("bound of %d bytes, want %d", len(bb), RelayBoundLen)
	}
	got, err := ParseRelayBound(bb)
	if err != nil || !reflect.DeepEqual(got, bd) {
		t.Fatalf("bound: %+v %v", got, err)
	}
	if _, err := ParseRelayBound(cb); err == nil {
		t.Fatal("a challenge parsed as a bound")
	}
}

// FuzzRelayBind: the bind decoders never panic, Peek accepts whatever
// Parse does, and an accepted bind re-encodes (with the same key, clock
// and cookie) to a frame that starts the same way.
func FuzzRelayBind(f *testing.F) {
	id, _ := crypto.IdentityFromSeed(bytes.Repeat([]byte{1}, 32))
	f.Add(AppendRelayBind(nil, id, time.UnixMilli(1700000000000), crypto.Cookie{}))
	f.Add(AppendRelayBind(nil, id, time.UnixMilli(1), crypto.Cookie{1, 2, 3}))
	short := AppendRelayBind(nil, id, time.UnixMilli(1), crypto.Cookie{})
	f.Add(short[:RelayBindLen-1])
	f.Add([]byte{TypeRelayBind, Version})
	f.Add([]byte{TypeRelayBind, BindVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, perr := PeekRelayBind(b)
		r, err := ParseRelayBind(b)
		if err == nil {
			if perr != nil || p != r {
				t.Fatalf("parse accepted what peek refused (%v) or disagrees", perr)
			}
			if r.ID != id.ID() {
				return // a valid signature from another key: cannot re-sign
			}
			again := AppendRelayBind(nil, id, r.Time, r.Cookie)
			if !bytes.Equal(again[:bindEnd], b[:bindEnd]) {
				t.Fatal("re-encoded bind differs")
			}
		}
	})
}

// FuzzRelayChallenge: the decoder never panics and round-trips.
func FuzzRelayChallenge(f *testing.F) {
	f.Add(AppendRelayChallenge(nil, RelayChallenge{}))
	f.Add(AppendRelayChallenge(nil, RelayChallenge{Cookie: crypto.Cookie{1}, Echo: Echo{2}}))
	f.Add([]byte{TypeRelayChallenge, BindVersion, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseRelayChallenge(b)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendRelayChallenge(nil, c), b) {
			t.Fatal("challenge does not round-trip")
		}
	})
}

// FuzzRelayBound: the decoder never panics, and what it accepts re-encodes
// to a frame that decodes the same.
func FuzzRelayBound(f *testing.F) {
	f.Add(AppendRelayBound(nil, RelayBound{Ticket: make([]byte, crypto.TicketSize), Observed: netip.MustParseAddrPort("127.0.0.1:9"), Expiry: time.Unix(1, 0)}))
	f.Add(AppendRelayBound(nil, RelayBound{Ticket: bytes.Repeat([]byte{1}, crypto.TicketSize), Observed: netip.MustParseAddrPort("[2001:db8::1]:9"), Cookie: crypto.Cookie{3}, Echo: Echo{4}}))
	f.Add([]byte{TypeRelayBound, BindVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRelayBound(b)
		if err != nil {
			return
		}
		again, err := ParseRelayBound(AppendRelayBound(nil, r))
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("bound does not round-trip: %v", err)
		}
	})
}
