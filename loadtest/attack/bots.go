package attack

import (
	"context"
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
	"github.com/keymesh/keymesh/internal/streamclient"
	"github.com/keymesh/keymesh/internal/wire"
)

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
	_, st, err := botRegisterWith(ctx, e, conn, cur, nil)
	return st, err
}

// botRegisterWith is botRegister claiming cands as the key's candidates;
// it also returns the client, registered for 2 s from now at most.
func botRegisterWith(ctx context.Context, e *env, conn *net.UDPConn, cur *atomic.Pointer[rzclient.Client], cands []netip.AddrPort) (*rzclient.Client, rzclient.Status, error) {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return nil, rzclient.Status{}, err
	}
	done := make(chan struct{})
	var once sync.Once
	c, err := rzclient.New(rzclient.Config{
		Identity: id, Server: e.srv.rzAddr, ServerKey: e.srv.rzKey, AllowAny: true,
		Candidates: func() []netip.AddrPort { return cands },
		Send: func(b []byte, to netip.AddrPort) error {
			_, err := conn.WriteToUDPAddrPort(b, to)
			return err
		},
		OnRegistered: func(wire.Registered) { once.Do(func() { close(done) }) },
	})
	if err != nil {
		return nil, rzclient.Status{}, err
	}
	cur.Store(c)
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	go func() { _ = c.Run(rctx) }()
	select {
	case <-done:
		return c, c.Status(), nil
	case <-rctx.Done():
		return nil, rzclient.Status{}, errors.New("not registered")
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
		readFrames(conn, func(frame []byte, from netip.AddrPort) {
			if c := cur.Load(); c != nil {
				c.HandleFrame(frame, from)
			}
		})
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
		TLSClientConfig: streamclient.PinnedTLS(e.srv.streamID),
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
			readFrames(conn, func(frame []byte, from netip.AddrPort) {
				c.HandleFrame(frame, from)
			})
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

// bindReplay captures (makes, with a legitimate peer's key, as a wire
// tap would see it) one RelayBind and resends it unchanged from bot
// addresses: each RelayBound it earns is a ticket naming the legitimate
// peer at an address the attacker holds.
func bindReplay(ctx context.Context, e *env) error {
	captured := wire.AppendRelayBind(nil, e.pop.peers[0].id, time.Now(), crypto.Cookie{})
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
				if _, perr := wire.ParseRelayBound(buf[:n]); perr == nil {
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
