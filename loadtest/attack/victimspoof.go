package attack

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// The spoofed peers' own operations, judged by CheckSpoofedPeer.
const (
	// OpVictimKeepalive: a spoofed peer's Keepalive (resent every 500 ms
	// until answered) gets its KeepaliveAck within opTimeout.
	OpVictimKeepalive Op = "spoofed-keepalive"
	// OpVictimConnect: a spoofed peer's Connect finds another peer.
	OpVictimConnect Op = "spoofed-connect"
)

// VictimOps lists the spoofed peers' operations in report order.
var VictimOps = []Op{OpVictimKeepalive, OpVictimConnect}

// spoofedPeers is how many of the population's peers victimSpoof forges.
const spoofedPeers = 4

// victimSpoof floods the rendezvous with datagrams forged from the
// addresses of legitimate, registered peers (their very port and others):
// cookieless sealed Keepalives and Registers under a stranger's key (well
// formed, unproven), STUN Binding requests and junk; and floods the relay
// with forged RelayBinds and junk from the relay pair's sender and the
// same peers (together at the suite's rate: three quarters of it to the
// rendezvous). A server that charges a per-source budget before the sender
// proved its address lets such a flood silence the peer it names. Meanwhile
// each spoofed peer keeps sending Keepalives and Connects, whose outcome
// is judged (Result.Victims), as are the relay pair's datagrams (OpRelay).
func victimSpoof(ctx context.Context, e *env) error {
	n := min(spoofedPeers, len(e.pop.peers)/2)
	victims := e.pop.peers[:n]
	var srcs []netip.AddrPort
	for _, lp := range victims {
		srcs = append(srcs, lp.conn.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	relaySrc := e.pop.relayA.LocalAddr().(*net.UDPAddr).AddrPort()

	stranger, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return err
	}
	shared, err := stranger.SharedKey(e.srv.rzKey)
	if err != nil {
		return err
	}
	me := stranger.ID()
	keys := make([][32]byte, 256)
	for i := range keys {
		pub, _, err := ed25519.GenerateKey(nil)
		if err != nil {
			return err
		}
		copy(keys[i][:], pub)
	}
	// pick is a victim's address, at its own port one time in two.
	pick := func(r *rand.Rand, from []netip.AddrPort) netip.AddrPort {
		s := from[r.IntN(len(from))]
		if r.IntN(2) == 0 {
			return s
		}
		return netip.AddrPortFrom(s.Addr(), uint16(1024+r.IntN(64000)))
	}
	// Sealed once, ahead: sealing each datagram would hold the generator
	// below the rate. Each has its own nonce; their clock is the attack's
	// start (the rendezvous checks a clock only after the cookie proof
	// they lack).
	sealed := make([][]byte, 2048)
	now := time.Now().UnixMilli()
	for i := range sealed {
		var body wire.Body = &wire.Keepalive{}
		if i%2 == 1 {
			body = &wire.Register{NAT: wire.NATNone, AllowAny: true}
		}
		sealed[i], _ = wire.SealRequest(nil, me, shared, wire.AppendMessage(nil, wire.Message{Time: now, Body: body}), nil)
	}
	rzSize := len(sealed[0])
	relaySrcs := append([]netip.AddrPort{relaySrc}, srcs...)
	// The mean datagrams, to pace at the rate in bits: half sealed, a
	// quarter STUN (20 bytes), a quarter junk (2 to rzSize+1); three
	// quarters RelayBinds, a quarter junk (2 to 65).
	rzMean := (2*rzSize + 20 + (rzSize+3)/2) / 4
	relayMean := (3*wire.RelayBindLen + 34) / 4

	// The suite's rate, split: three quarters to the rendezvous, a
	// quarter to the relay.
	rzRate, relayRate := e.rate.scale(0.75), e.rate.scale(0.25)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		flood(ctx, e.raw, e.srv.rzAddr, rzRate.pps(rzMean), e.workers, func(r *rand.Rand, scratch []byte) ([]byte, netip.AddrPort) {
			var b []byte
			switch r.IntN(4) {
			case 0, 1:
				b = append(scratch[:0], sealed[r.IntN(len(sealed))]...)
			case 2:
				b = append(scratch[:0], bindingRequest()...)
			default:
				b = scratch[:2+r.IntN(rzSize)]
				b[0] = wire.TypeRequest
				fillRandom(r, b[1:])
			}
			return b, pick(r, srcs)
		}, &e.sent)
	}()
	go func() {
		defer wg.Done()
		flood(ctx, e.raw, e.srv.relayAddr, relayRate.pps(relayMean), e.workers, func(r *rand.Rand, scratch []byte) ([]byte, netip.AddrPort) {
			b := scratch[:wire.RelayBindLen]
			clear(b)
			b[0], b[1] = wire.TypeRelayBind, wire.BindVersion
			copy(b[2:34], keys[r.IntN(len(keys))][:])
			binary.BigEndian.PutUint64(b[34:42], uint64(time.Now().UnixMilli()))
			fillRandom(r, b[42:42+crypto.CookieSize+ed25519.SignatureSize])
			if r.IntN(4) == 0 {
				b = b[:2+r.IntN(64)]
				fillRandom(r, b[2:])
			}
			return b, pick(r, relaySrcs)
		}, &e.sent)
	}()

	// The spoofed peers' own operations, at the legitimate rate each.
	ka, conn := &opStats{}, &opStats{}
	interval := max(time.Duration(float64(time.Second)/e.legitRate), 20*time.Millisecond)
	for i, lp := range victims {
		others := make([]*legitPeer, 0, len(e.pop.peers)-1)
		for _, o := range e.pop.peers {
			if o != lp {
				others = append(others, o)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			var inner sync.WaitGroup
			defer inner.Wait()
			for k := i; ; k++ {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				inner.Add(1)
				go func() {
					defer inner.Done()
					// e.pop.ctx outlives the attack: an operation started
					// before its end runs to its own timeout.
					octx, cancel := context.WithTimeout(e.pop.ctx, opTimeout)
					defer cancel()
					t0 := time.Now()
					if k%2 == 0 {
						err := lp.keepalive(octx)
						ka.record(time.Since(t0), err)
						return
					}
					r, err := lp.client.ConnectPeer(octx, others[k%len(others)].id.ID())
					if err == nil && !r.Found {
						err = errors.New("connect: registered peer not found")
					}
					conn.record(time.Since(t0), err)
				}()
			}
		}()
	}
	wg.Wait()
	e.victimOps = map[Op]OpResult{OpVictimKeepalive: ka.result(), OpVictimConnect: conn.result()}
	return nil
}

// keepalive sends a Keepalive from the peer's socket (again every 500 ms)
// until a KeepaliveAck arrives or ctx ends.
func (lp *legitPeer) keepalive(ctx context.Context) error {
	ch := make(chan struct{}, 1)
	lp.kaMu.Lock()
	lp.kaWait = append(lp.kaWait, ch)
	lp.kaMu.Unlock()
	defer func() {
		lp.kaMu.Lock()
		for i, c := range lp.kaWait {
			if c == ch {
				lp.kaWait = append(lp.kaWait[:i], lp.kaWait[i+1:]...)
				break
			}
		}
		lp.kaMu.Unlock()
	}()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		if err := lp.client.Ping(); err != nil {
			return err
		}
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return errors.New("keepalive: no KeepaliveAck")
		case <-t.C:
		}
	}
}

// noteFrame wakes the peer's keepalive waiters when frame is a
// KeepaliveAck from the rendezvous (a sealed frame that opens under the
// server's key; rzclient checks its clock and replays).
func (lp *legitPeer) noteFrame(frame []byte, serverKey crypto.PeerID) {
	lp.kaMu.Lock()
	waiting := len(lp.kaWait) > 0
	lp.kaMu.Unlock()
	if !waiting {
		return
	}
	s, err := wire.ParseSealed(frame)
	if err != nil || s.Sender != serverKey {
		return
	}
	m, err := s.Open(lp.shared)
	if err != nil {
		return
	}
	if _, ok := m.Body.(*wire.KeepaliveAck); !ok {
		return
	}
	lp.kaMu.Lock()
	for _, c := range lp.kaWait {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	lp.kaMu.Unlock()
}
