package attack

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/streamrelay"
	"github.com/keymesh/keymesh/internal/wire"
)

// Check says how an attack's traffic balance is judged.
type Check string

// Checks.
const (
	// CheckNone: the attacker uses its own addresses (it holds resources
	// rather than reflecting), so bytes out against bytes in says nothing.
	CheckNone Check = "none"
	// CheckAmplification: spoofed requests; the servers may send at most
	// as many bytes to the spoofed sources as they received.
	CheckAmplification Check = "amplification"
	// CheckVictim: an attacker with a proven address makes the server
	// send to a victim it picks; bytes at the victim over bytes the
	// attacker sent are reported (VictimAmplification), not judged: no
	// threshold of the issue covers them.
	CheckVictim Check = "victim"
	// CheckInternal: the attacker asks a relay to send to loopback, a
	// private address, the metadata address and the server's own
	// address; any datagram arriving there fails.
	CheckInternal Check = "internal"
	// CheckReplay: the attacker resends a legitimate peer's signed
	// request from its own address; any answer fails.
	CheckReplay Check = "replay"
	// CheckReflectRate: STUN Binding from one spoofed victim; the answer
	// may be larger than the request, but the answers to one source must
	// be rate-limited (Thresholds.MaxReflectPPS).
	CheckReflectRate Check = "reflect-rate"
)

// Attack is one attack of the suite.
type Attack struct {
	Name, Summary string
	Check         Check
	// Spoofed is whether the attack forges its source addresses.
	Spoofed bool
	run     func(ctx context.Context, e *env) error
}

// env is what an attack runs against and with.
type env struct {
	lab     *Lab
	srv     *servers
	pop     *population
	rate    Rate
	workers int
	maxHeld int
	raw     *rawSender
	sent    floodStats
	held    atomic.Int64 // resources the attacker holds (records, allocations, tunnels), or Connects answered
	// victimBytes is what the victim of a CheckVictim attack received.
	victimBytes atomic.Int64
	// sinks are the internal destinations of a CheckInternal attack.
	sinks []*sink

	mu      sync.Mutex
	release []func() // run after the measurement
}

func (e *env) onRelease(f func()) {
	e.mu.Lock()
	e.release = append(e.release, f)
	e.mu.Unlock()
}

// Attacks returns the suite in the order it runs. "none" is the baseline:
// the legitimate population alone.
func Attacks() []Attack {
	return []Attack{
		{Name: "none", Summary: "no attack: the legitimate population alone (baseline)", Check: CheckNone,
			run: func(ctx context.Context, _ *env) error { <-ctx.Done(); return nil }},
		{Name: "replay-fill", Summary: "cookieless sealed Registers from one key, fresh nonces, spoofed sources: fills the rendezvous replay cache", Check: CheckAmplification, Spoofed: true, run: replayFill},
		{Name: "x25519", Summary: "Registers from random valid keys (a box that cannot open), spoofed sources: one X25519 each", Check: CheckAmplification, Spoofed: true, run: x25519Flood},
		{Name: "bind-forge", Summary: "RelayBinds with forged signatures from spoofed addresses: spends the global bind budget", Check: CheckAmplification, Spoofed: true, run: bindForge(false)},
		{Name: "bind-forge-ports", Summary: "forged RelayBinds from one spoofed address, rotating ports: per-port limiter", Check: CheckAmplification, Spoofed: true, run: bindForge(true)},
		{Name: "stun-reflect", Summary: "STUN Binding (20 bytes) to the rendezvous from a spoofed victim", Check: CheckReflectRate, Spoofed: true,
			run: stunFlood(func(s *servers) netip.AddrPort { return s.rzAddr })},
		{Name: "stun-reflect-alt", Summary: "STUN Binding to the rendezvous' RFC 5780 alternate socket from a spoofed victim", Check: CheckReflectRate, Spoofed: true,
			run: stunFlood(func(*servers) netip.AddrPort { return netip.AddrPortFrom(srvAltAddr, altPort) })},
		{Name: "turn-stun-reflect", Summary: "STUN Binding to the TURN port from a spoofed victim", Check: CheckReflectRate, Spoofed: true,
			run: stunFlood(func(s *servers) netip.AddrPort { return s.turnAddr })},
		{Name: "turn-allocate-unauth", Summary: "unauthenticated TURN Allocate from a spoofed victim (the 401 answer)", Check: CheckAmplification, Spoofed: true, run: turnUnauth},
		{Name: "registry-fill", Summary: "fresh keys register from 254 addresses as fast as allowed: registry records", Check: CheckNone, run: registryFill},
		{Name: "turn-exhaust", Summary: "fresh keys register for TURN credentials and hold every allocation they can", Check: CheckNone, run: turnExhaust},
		{Name: "punch-flood", Summary: "registered keys with 16 candidates and 4 tickets each Connect to one legitimate peer: every Connect sends it a large Punch", Check: CheckVictim, run: punchFlood},
		{Name: "bind-replay", Summary: "a legitimate peer's RelayBind, captured and resent from other addresses within its 60 s: tickets for the peer's key at the attacker's address", Check: CheckReplay, run: bindReplay},
		{Name: "turn-internal", Summary: "a registered key's TURN allocation sends to 127.0.0.1, 10.9.9.9, 169.254.169.254 and the relay's own address", Check: CheckInternal, run: turnInternal},
		{Name: "stream-internal", Summary: "a self-made key's stream tunnel sends to 127.0.0.1, 10.9.9.9, 169.254.169.254 and the relay's own address", Check: CheckInternal, run: streamInternal},
		{Name: "stream-exhaust", Summary: "fresh keys open and hold TLS stream-relay tunnels (each a UDP socket on the relay)", Check: CheckNone, run: streamExhaust},
	}
}

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
		return spoofFlood(ctx, e, e.srv.relayAddr, wire.RelayBindMin, func(r *rand.Rand, scratch []byte) ([]byte, netip.AddrPort) {
			b := scratch[:wire.RelayBindMin]
			clear(b)
			b[0], b[1] = wire.TypeRelayBind, wire.Version
			copy(b[2:34], keys[r.IntN(len(keys))][:])
			binary.BigEndian.PutUint64(b[34:42], uint64(time.Now().UnixMilli()))
			fillRandom(r, b[42:106])
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

// botAddr returns bot i's own address (1..254).
func botAddr(i int) netip.Addr {
	b := botNet.Addr().As4()
	b[3] = byte(1 + i%254)
	return netip.AddrFrom4(b)
}

// bots runs fn once per bot address, concurrently, until ctx ends.
func bots(ctx context.Context, n int, fn func(ctx context.Context, i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(ctx, i)
		}()
	}
	wg.Wait()
}

// botRegister registers a fresh key from conn and returns its client's
// status (TURN credentials included).
func botRegister(ctx context.Context, e *env, conn *net.UDPConn, cur *atomic.Pointer[rzclient.Client]) (rzclient.Status, error) {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return rzclient.Status{}, err
	}
	done := make(chan struct{})
	var once sync.Once
	c, err := rzclient.New(rzclient.Config{
		Identity: id, Server: e.srv.rzAddr, ServerKey: e.srv.rzKey, AllowAny: true,
		Send: func(b []byte, to netip.AddrPort) error {
			_, err := conn.WriteToUDPAddrPort(b, to)
			return err
		},
		OnRegistered: func(wire.Registered) { once.Do(func() { close(done) }) },
	})
	if err != nil {
		return rzclient.Status{}, err
	}
	cur.Store(c)
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	go func() { _ = c.Run(rctx) }()
	select {
	case <-done:
		return c.Status(), nil
	case <-rctx.Done():
		return rzclient.Status{}, errors.New("not registered")
	}
}

// botSocket opens bot i's rendezvous socket and its reader, which hands
// frames to the current client.
func botSocket(e *env, i int) (*net.UDPConn, *atomic.Pointer[rzclient.Client], error) {
	conn, err := listenUDP(e.lab.Bad, netip.AddrPortFrom(botAddr(i), 0))
	if err != nil {
		return nil, nil, err
	}
	cur := &atomic.Pointer[rzclient.Client]{}
	go func() {
		buf := make([]byte, wire.MaxFrame)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			if c := cur.Load(); c != nil {
				c.HandleFrame(buf[:n], from)
			}
		}
	}()
	return conn, cur, nil
}

// registryFill registers fresh keys from every bot address as fast as the
// server answers.
func registryFill(ctx context.Context, e *env) error {
	bots(ctx, 254, func(ctx context.Context, i int) {
		conn, cur, err := botSocket(e, i)
		if err != nil {
			return
		}
		defer conn.Close()
		for ctx.Err() == nil {
			if _, err := botRegister(ctx, e, conn, cur); err == nil {
				e.held.Add(1)
			}
		}
	})
	return nil
}

// turnExhaust gets TURN credentials by registering fresh keys and makes as
// many allocations with each as the server grants, never releasing them.
func turnExhaust(ctx context.Context, e *env) error {
	bots(ctx, 64, func(ctx context.Context, i int) {
		conn, cur, err := botSocket(e, i)
		if err != nil {
			return
		}
		defer conn.Close()
		for ctx.Err() == nil && e.held.Load() < int64(e.maxHeld) {
			st, err := botRegister(ctx, e, conn, cur)
			if err != nil || st.TURNUser == "" {
				continue
			}
			for ctx.Err() == nil && e.held.Load() < int64(e.maxHeld) {
				c, err := listenUDP(e.lab.Bad, netip.AddrPortFrom(botAddr(i), 0))
				if err != nil {
					return
				}
				_, err = turnAllocate(c, e.srv.turnAddr, st.TURNUser, st.TURNPass, false, time.Now().Add(2*time.Second))
				c.Close()
				if err != nil {
					break // quota reached (or no answer): next key
				}
				e.held.Add(1)
			}
		}
	})
	return nil
}

// streamExhaust opens stream-relay tunnels with fresh keys from every bot
// address and holds them open.
func streamExhaust(ctx context.Context, e *env) error {
	bots(ctx, 64, func(ctx context.Context, i int) {
		for ctx.Err() == nil && e.held.Load() < int64(e.maxHeld) {
			ws, err := openTunnel(ctx, e, botAddr(i))
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
				continue
			}
			e.held.Add(1)
			e.onRelease(func() { ws.CloseNow() })
		}
	})
	return nil
}

// openTunnel opens one stream-relay tunnel from src (the WebSocket upgrade,
// the signed client hello, the server hello) and returns it open.
func openTunnel(ctx context.Context, e *env, src netip.Addr) (*websocket.Conn, error) {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: streamrelay.PinnedTLS(e.srv.streamID),
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialTCP(ctx, e.lab.Bad, src, netip.AddrPortFrom(srvAddr, streamPort))
		},
	}}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(dctx, e.srv.stream.URL, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, err
	}
	const helloContext = "keymesh stream tunnel v1" // streamrelay's, version 1
	hello := []byte{1}
	me := id.ID()
	hello = append(hello, me[:]...)
	hello = binary.BigEndian.AppendUint64(hello, uint64(time.Now().UnixMilli()))
	hello = append(hello, id.Sign(append([]byte(helloContext), hello...))...)
	if err := ws.Write(dctx, websocket.MessageBinary, hello); err != nil {
		ws.CloseNow()
		return nil, err
	}
	_, b, err := ws.Read(dctx)
	if err != nil {
		ws.CloseNow()
		return nil, err
	}
	if len(b) < 1 || b[0] != 1 {
		ws.CloseNow()
		return nil, fmt.Errorf("stream: odd server hello of %d bytes", len(b))
	}
	return ws, nil
}

// punchFlood registers bot keys that carry the most candidates and tickets
// a Register holds, then has them Connect to one legitimate peer (which
// admits anyone) as fast as the server answers: each Connect makes the
// rendezvous send the victim a Punch with all of them.
func punchFlood(ctx context.Context, e *env) error {
	victim := e.pop.peers[0]
	target := victim.id.ID()
	cands := make([]netip.AddrPort, wire.MaxCandidates)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range cands {
		cands[i] = randomSource(r)
	}
	tickets := make([][]byte, wire.MaxTickets)
	for i := range tickets {
		tickets[i] = make([]byte, crypto.TicketSize)
		fillRandom(r, tickets[i])
	}
	rx0 := victim.rxBytes.Load()
	defer func() { e.victimBytes.Store(victim.rxBytes.Load() - rx0) }()
	bots(ctx, 64, func(ctx context.Context, i int) {
		conn, err := listenUDP(e.lab.Bad, netip.AddrPortFrom(botAddr(i), 0))
		if err != nil {
			return
		}
		defer conn.Close()
		id, err := crypto.GenerateIdentity(nil)
		if err != nil {
			return
		}
		registered := make(chan struct{})
		var once sync.Once
		c, err := rzclient.New(rzclient.Config{
			Identity: id, Server: e.srv.rzAddr, ServerKey: e.srv.rzKey, AllowAny: true,
			Candidates: func() []netip.AddrPort { return cands },
			Tickets:    func() [][]byte { return tickets },
			Send: func(b []byte, to netip.AddrPort) error {
				_, err := conn.WriteToUDPAddrPort(b, to)
				return err
			},
			OnRegistered: func(wire.Registered) { once.Do(func() { close(registered) }) },
		})
		if err != nil {
			return
		}
		go func() {
			buf := make([]byte, wire.MaxFrame)
			for {
				n, from, err := conn.ReadFromUDPAddrPort(buf)
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				c.HandleFrame(buf[:n], from)
			}
		}()
		go func() { _ = c.Run(ctx) }()
		select {
		case <-registered:
		case <-ctx.Done():
			return
		}
		var wg sync.WaitGroup
		for range 4 { // Connects in flight per bot
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					cctx, cancel := context.WithTimeout(ctx, time.Second)
					if _, err := c.ConnectPeer(cctx, target); err == nil {
						e.held.Add(1)
					}
					cancel()
				}
			}()
		}
		wg.Wait()
	})
	return nil
}

// sink is a UDP socket on the server host that no stranger's traffic may
// reach through a relay.
type sink struct {
	name string
	addr netip.AddrPort
	conn *net.UDPConn
	got  atomic.Int64
}

// sinkPort is the port of every sink.
const sinkPort = 7777

// openSinks opens the internal destinations in the server namespace.
func openSinks(lab *Lab) ([]*sink, error) {
	var out []*sink
	for _, d := range []struct {
		name string
		a    netip.Addr
	}{
		{"loopback", netip.MustParseAddr("127.0.0.1")},
		{"private", internalAddr},
		{"metadata", metadataAddr},
		{"own-address", srvAddr},
	} {
		ap := netip.AddrPortFrom(d.a, sinkPort)
		c, err := listenUDP(lab.Srv, ap)
		if err != nil {
			for _, s := range out {
				s.conn.Close()
			}
			return nil, err
		}
		s := &sink{name: d.name, addr: ap, conn: c}
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				s.got.Add(1)
			}
		}()
		out = append(out, s)
	}
	return out, nil
}

// turnInternal allocates with fresh registered keys and asks the relay to
// send to every sink, again and again.
func turnInternal(ctx context.Context, e *env) error {
	conn, cur, err := botSocket(e, 1)
	if err != nil {
		return err
	}
	defer conn.Close()
	for ctx.Err() == nil {
		st, err := botRegister(ctx, e, conn, cur)
		if err != nil || st.TURNUser == "" {
			continue
		}
		c, err := listenUDP(e.lab.Bad, netip.AddrPortFrom(botAddr(2), 0))
		if err != nil {
			return err
		}
		ts, err := newTURNSession(c, e.srv.turnAddr, st.TURNUser, st.TURNPass, time.Now().Add(2*time.Second))
		if err != nil {
			c.Close()
			continue
		}
		for _, s := range e.sinks {
			if err := ts.sendTo(s.addr, []byte("internal?")); err == nil {
				e.held.Add(1) // a permission granted to a forbidden peer
			}
		}
		c.Close()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// streamInternal opens tunnels with fresh keys and sends to every sink.
func streamInternal(ctx context.Context, e *env) error {
	for ctx.Err() == nil {
		ws, err := openTunnel(ctx, e, botAddr(3))
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		for _, s := range e.sinks {
			frame := wire.AppendAddr(nil, s.addr)
			frame = append(frame, "internal?"...)
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			_ = ws.Write(wctx, websocket.MessageBinary, frame)
			cancel()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		ws.CloseNow()
	}
	return nil
}

// bindReplay captures (makes, with a legitimate peer's key, as a wire
// tap would see it) one RelayBind and resends it unchanged from bot
// addresses: each RelayBound it earns is a ticket naming the legitimate
// peer at an address the attacker holds.
func bindReplay(ctx context.Context, e *env) error {
	captured := wire.AppendRelayBind(nil, e.pop.peers[0].id, time.Now())
	bots(ctx, 16, func(ctx context.Context, i int) {
		conn, err := listenUDP(e.lab.Bad, netip.AddrPortFrom(botAddr(i), 0))
		if err != nil {
			return
		}
		defer conn.Close()
		go func() {
			<-ctx.Done()
			conn.Close()
		}()
		buf := make([]byte, wire.MaxFrame)
		for ctx.Err() == nil {
			if _, err := conn.WriteToUDPAddrPort(captured, e.srv.relayAddr); err != nil {
				return
			}
			_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err == nil && from == e.srv.relayAddr {
				if _, _, _, perr := wire.ParseRelayBound(buf[:n]); perr == nil {
					e.held.Add(1)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	return nil
}
