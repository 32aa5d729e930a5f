//go:build linux

package scaleout_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/rzclient"
	"github.com/keymesh/keymesh/internal/wire"
)

// simPeer is a simulated peer: an rzclient on its own loopback UDP socket.
// Each peer has its own source address (127.0.7.N), so each is a distinct
// flow for the kernel's SO_REUSEPORT hash and has its own rate-limit
// bucket at the servers, as peers behind different NATs would.
type simPeer struct {
	idx  int
	id   *crypto.Identity
	conn *net.UDPConn
	addr netip.AddrPort // our socket's address: what the server must see
	c    *rzclient.Client

	mu      sync.Mutex
	punches map[uint64][]wire.Punch // by TxID: one per Connect the servers answered (a retransmitted Connect keeps its TxID)
	regs    []regEvent
}

// regEvent is one Registered the peer received.
type regEvent struct {
	at       time.Time
	instance string
}

// startPeers starts n peers registering with the server at addr (key) and
// waits until every one is registered. They stop in t.Cleanup.
func startPeers(t *testing.T, n int, addr netip.AddrPort, key crypto.PeerID) []*simPeer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	peers := make([]*simPeer, n)
	for i := range peers {
		peers[i] = newSimPeer(t, i, addr, key)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		for _, p := range peers {
			p.conn.Close()
		}
		wg.Wait()
	})
	for _, p := range peers {
		wg.Add(2)
		go func() { defer wg.Done(); p.read() }()
		go func() { defer wg.Done(); _ = p.c.Run(ctx) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range peers {
		for !p.c.Status().Registered {
			if time.Now().After(deadline) {
				t.Fatalf("peer %d not registered within 10 s: %q", p.idx, p.c.Status().LastError)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return peers
}

func newSimPeer(t *testing.T, i int, server netip.AddrPort, key crypto.PeerID) *simPeer {
	t.Helper()
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 7, byte(i+1))}
	conn, err := net.ListenUDP("udp", src)
	if err != nil {
		t.Fatal(err)
	}
	p := &simPeer{idx: i, id: id, conn: conn, addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), punches: map[uint64][]wire.Punch{}}
	p.c, err = rzclient.New(rzclient.Config{
		Identity:   id,
		Server:     server,
		ServerKey:  key,
		AllowAny:   true,
		Candidates: func() []netip.AddrPort { return []netip.AddrPort{p.addr} },
		Send: func(b []byte, to netip.AddrPort) error {
			_, err := conn.WriteToUDPAddrPort(b, to)
			return err
		},
		OnPunch: func(pu wire.Punch) {
			p.mu.Lock()
			p.punches[pu.TxID] = append(p.punches[pu.TxID], pu)
			p.mu.Unlock()
		},
		OnRegistered: func(r wire.Registered) {
			p.mu.Lock()
			p.regs = append(p.regs, regEvent{at: time.Now(), instance: r.Instance})
			p.mu.Unlock()
		},
		// Quick retries, so that a datagram lost in a killed instance's
		// socket costs a fraction of the refresh interval; the backoff
		// cap bounds how long a peer waits after an outage.
		Retransmit:   200 * time.Millisecond,
		MaxBackoff:   time.Second,
		ConnectTries: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *simPeer) read() {
	buf := make([]byte, wire.MaxFrame)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.c.HandleFrame(buf[:n], from)
	}
}

// instance is the rendezvous instance that answered our last registration.
func (p *simPeer) instance() string { return p.c.Status().Instance }

// registeredVia returns when the first registration at or after t from an
// instance other than exclude arrived.
func (p *simPeer) registeredVia(t time.Time, exclude string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.regs {
		if !r.at.Before(t) && r.instance != exclude {
			return r.at, true
		}
	}
	return time.Time{}, false
}

// punches returns the Punches with txID that arrived so far. A Connect the
// client retransmitted (its first answer slow, or lost) is answered once per
// copy that reached a server, each with its own start time.
func (p *simPeer) punchesFor(txID uint64) []wire.Punch {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]wire.Punch(nil), p.punches[txID]...)
}

// connect makes from ask for to and checks the whole introduction: the
// reply names to at its real socket address, and to gets a Punch naming
// from at its real address, with the same TxID and start time. It returns
// an error instead of failing, for loops that retry.
func connect(ctx context.Context, from, to *simPeer) error {
	r, err := from.c.ConnectPeer(ctx, to.id.ID())
	if err != nil {
		return err
	}
	if r.Peer.ID != to.id.ID() || r.Peer.Reflexive != to.addr {
		return errors.New("connect reply names the wrong peer or address")
	}
	deadline := time.Now().Add(time.Second)
	for {
		if pus := to.punchesFor(r.TxID); len(pus) > 0 {
			for _, pu := range pus {
				if pu.Peer.ID != from.id.ID() || pu.Peer.Reflexive != from.addr {
					return errors.New("punch names the wrong peer or address")
				}
			}
			for _, pu := range pus {
				if pu.Start == r.Start {
					return nil
				}
			}
			// The Punch that goes with the reply we took may still be
			// on its way; the deadline below bounds the wait.
		}
		if time.Now().After(deadline) {
			return errors.New("target got no punch within 1 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
