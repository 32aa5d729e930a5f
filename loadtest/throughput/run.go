package throughput

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/pathsock"
	"github.com/keymesh/keymesh/internal/testutil/servertest"
	"github.com/keymesh/keymesh/node"
)

// tpDatagram is the raw UDP baseline's datagram size.
const tpDatagram = 1200

func tpListen() (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(8 << 20)
	_ = c.SetWriteBuffer(8 << 20)
	return c, nil
}

// tpListenPair is two tpListen sockets, or none.
func tpListenPair() (a, b *net.UDPConn, err error) {
	if a, err = tpListen(); err != nil {
		return nil, nil, err
	}
	if b, err = tpListen(); err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// tpRawUDP blasts n bytes of 1200-byte datagrams at a receiver that counts
// them; the result is what arrived, from the first send to the last
// arrival.
func tpRawUDP(ctx context.Context, n int64) (tpResult, error) {
	rx, tx, err := tpListenPair()
	if err != nil {
		return tpResult{}, err
	}
	defer rx.Close()
	defer tx.Close()
	type rxResult struct {
		bytes int64
		last  time.Time
	}
	done := make(chan rxResult, 1)
	go func() {
		buf := make([]byte, 2048)
		var got int64
		var last time.Time
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		for got < n {
			k, _, err := rx.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // idle: the sender is done, the rest was lost
			}
			got += int64(k)
			last = time.Now()
			rx.SetReadDeadline(last.Add(300 * time.Millisecond))
		}
		done <- rxResult{got, last}
	}()
	pkt := make([]byte, tpDatagram)
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	start := time.Now()
	var sent int64
	for sent < n && ctx.Err() == nil {
		if _, err := tx.WriteToUDPAddrPort(pkt, to); err != nil {
			return tpResult{}, err
		}
		sent += tpDatagram
	}
	r := <-done
	if r.bytes == 0 {
		return tpResult{}, errors.New("nothing arrived")
	}
	return tpResult{bytes: r.bytes, elapsed: r.last.Sub(start), sent: sent}, nil
}

// tpSend writes n bytes on w, then closes it.
func tpSend(w io.WriteCloser, n int64) error {
	buf := make([]byte, 64<<10)
	rand.Read(buf)
	for n > 0 {
		k := min(int64(len(buf)), n)
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return w.Close()
}

// tpQUICUDP moves n bytes over one quic-go stream between two plain UDP
// sockets; fixed sets the packet size as the path layer does.
func tpQUICUDP(fixed bool) func(ctx context.Context, n int64) (tpResult, error) {
	return func(ctx context.Context, n int64) (tpResult, error) {
		idS, err := crypto.GenerateIdentity(nil)
		if err != nil {
			return tpResult{}, err
		}
		idC, err := crypto.GenerateIdentity(nil)
		if err != nil {
			return tpResult{}, err
		}
		sconn, cconn, err := tpListenPair()
		if err != nil {
			return tpResult{}, err
		}
		defer sconn.Close()
		defer cconn.Close()
		qconf := &quic.Config{MaxIdleTimeout: 30 * time.Second}
		if fixed {
			qconf.InitialPacketSize = pathsock.MaxPayload
			qconf.DisablePathMTUDiscovery = true
		}
		stls, err := idS.ServerTLS(func(crypto.PeerID) error { return nil })
		if err != nil {
			return tpResult{}, err
		}
		ctls, err := idC.ClientTLS(idS.ID())
		if err != nil {
			return tpResult{}, err
		}
		trS := &quic.Transport{Conn: sconn}
		defer trS.Close()
		trC := &quic.Transport{Conn: cconn}
		defer trC.Close()
		ln, err := trS.Listen(stls, qconf)
		if err != nil {
			return tpResult{}, err
		}
		defer ln.Close()
		type rxResult struct {
			bytes int64
			end   time.Time
			err   error
		}
		done := make(chan rxResult, 1)
		go func() {
			c, err := ln.Accept(ctx)
			if err != nil {
				done <- rxResult{err: err}
				return
			}
			str, err := c.AcceptStream(ctx)
			if err != nil {
				done <- rxResult{err: err}
				return
			}
			got, err := io.Copy(io.Discard, str)
			done <- rxResult{got, time.Now(), err}
		}()
		c, err := trC.Dial(ctx, sconn.LocalAddr(), ctls, qconf)
		if err != nil {
			return tpResult{}, err
		}
		defer c.CloseWithError(0, "")
		str, err := c.OpenStreamSync(ctx)
		if err != nil {
			return tpResult{}, err
		}
		start := time.Now()
		if err := tpSend(str, n); err != nil {
			return tpResult{}, err
		}
		var r rxResult
		select {
		case r = <-done:
		case <-ctx.Done():
			return tpResult{}, ctx.Err()
		}
		if r.err != nil {
			return tpResult{}, r.err
		}
		return tpResult{bytes: r.bytes, elapsed: r.end.Sub(start)}, nil
	}
}

// tpMesh is an in-process rendezvous server and ticket relay on loopback.
type tpMesh struct {
	server string
	stop   func()
}

func tpStartMesh() (*tpMesh, error) {
	relayConn, rzConn, err := tpListenPair()
	if err != nil {
		return nil, err
	}
	// The relay's per-source limit (20,000 packets/s) would cap one flow
	// far below what loopback carries: this measures the data path.
	srv, err := servertest.Serve(relayConn, rzConn, nil)
	if err != nil {
		relayConn.Close()
		rzConn.Close()
		return nil, err
	}
	return &tpMesh{server: srv.Connect, stop: srv.Close}, nil
}

// tpNode moves n bytes over one node stream, on the direct path or (relay)
// through the relay.
func tpNode(viaRelay bool) func(ctx context.Context, n int64) (tpResult, error) {
	return func(ctx context.Context, n int64) (tpResult, error) {
		m, err := tpStartMesh()
		if err != nil {
			return tpResult{}, err
		}
		defer m.stop()
		var nodes []*node.Node
		defer func() {
			for _, nd := range nodes {
				nd.Close()
			}
		}()
		for range 2 {
			seed := make([]byte, 32)
			rand.Read(seed)
			nd, err := node.New(ctx, node.Config{Seed: seed, Server: m.server, ListenAddr: "127.0.0.1:0", AllowAny: true, NoDirect: viaRelay})
			if err != nil {
				return tpResult{}, err
			}
			nodes = append(nodes, nd)
		}
		a, b := nodes[0], nodes[1]
		type rxResult struct {
			bytes int64
			end   time.Time
			err   error
		}
		done := make(chan rxResult, 1)
		go func() {
			c, err := b.Listen().Accept()
			if err != nil {
				done <- rxResult{err: err}
				return
			}
			defer c.Close()
			got, err := io.Copy(io.Discard, c)
			done <- rxResult{got, time.Now(), err}
		}()
		c, err := a.Dial(ctx, b.ID())
		if err != nil {
			return tpResult{}, err
		}
		defer c.Close()
		want := "direct"
		if viaRelay {
			want = "relay"
		}
		if err := tpWaitPath(ctx, a, b.ID(), want); err != nil {
			return tpResult{}, err
		}
		start := time.Now()
		if err := tpSend(halfCloser{c.(*node.Conn)}, n); err != nil {
			return tpResult{}, err
		}
		var r rxResult
		select {
		case r = <-done:
		case <-ctx.Done():
			return tpResult{}, ctx.Err()
		}
		if r.err != nil {
			return tpResult{}, r.err
		}
		if p := tpPath(a, b.ID()); p != want {
			fmt.Fprintf(os.Stderr, "warning: path ended as %s, not %s\n", p, want)
		}
		return tpResult{bytes: r.bytes, elapsed: r.end.Sub(start)}, nil
	}
}

// halfCloser makes Close end only the sending direction.
type halfCloser struct{ c *node.Conn }

func (h halfCloser) Write(b []byte) (int, error) { return h.c.Write(b) }
func (h halfCloser) Close() error                { return h.c.CloseWrite() }

func tpPath(n *node.Node, peer string) string {
	for _, p := range n.Status().Peers {
		if p.ID == peer {
			return p.Path
		}
	}
	return "none"
}

func tpWaitPath(ctx context.Context, n *node.Node, peer, want string) error {
	deadline := time.Now().Add(10 * time.Second)
	for tpPath(n, peer) != want {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("path to the peer is %s, not %s, after 10 s", tpPath(n, peer), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
