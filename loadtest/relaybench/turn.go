package relaybench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/testutil/coturn"
)

// channelDataHeader is what ChannelData adds to a payload (RFC 8656 12.4).
const channelDataHeader = 4

// firstChannel is the channel number every flow binds to its receiver.
const firstChannel = 0x4000

// openTURN makes one allocation per flow, each from its own socket, with a
// channel bound to the flow's receiver, and sends ChannelData.
func openTURN(ctx context.Context, server netip.AddrPort, secret string, n int, o Options) (flowSet, error) {
	sk, err := openSinks(min(n, o.Receivers))
	if err != nil {
		return nil, err
	}
	srv := net.UDPAddrFromAddrPort(server)
	// Each flow set sends from its own loopback address: a server keeps
	// an allocation's 5-tuple a while after it ends (coturn answers a new
	// Allocate on it with 437), and the next set's ports may repeat.
	k := turnSources.Add(1)
	src := net.IPv4(127, 1, byte(k>>8), byte(k))
	u, err := newUDPFlows(src, n, o.Batch, srv, channelDataHeader)
	if err != nil {
		sk.close()
		return nil, err
	}
	u.sinks = sk
	u.frames = make([][]byte, n)
	clients := make([]*turnClient, n)
	// Release the allocations when done: the next flow count's sockets
	// may get the same ports, and a live allocation on a 5-tuple refuses
	// a new one (437).
	u.extra = func() {
		_ = parallel(context.Background(), n, 16, func(ctx context.Context, i int) error {
			if c := clients[i]; c != nil {
				c.release(ctx)
			}
			return nil
		})
	}
	err = parallel(ctx, n, 16, func(gctx context.Context, i int) error {
		user, pass := crypto.TURNCredentials([]byte(secret), fmt.Sprintf("flow%d", i), time.Hour, time.Now())
		c := &turnClient{conn: u.conns[i], server: srv, user: user, pass: pass}
		clients[i] = c
		if err := c.allocate(gctx); err != nil {
			return fmt.Errorf("flow %d: allocate: %w", i, err)
		}
		if err := c.bindChannel(gctx, firstChannel, sk.addr(i)); err != nil {
			return fmt.Errorf("flow %d: channel bind: %w", i, err)
		}
		f := make([]byte, channelDataHeader+o.Size)
		binary.BigEndian.PutUint16(f, firstChannel)
		binary.BigEndian.PutUint16(f[2:], uint16(o.Size))
		u.frames[i] = f
		return nil
	})
	if err != nil {
		u.close()
		return nil, err
	}
	sk.run(u.rec, 0)
	return u, nil
}

// turnSources numbers the flow sets of this process, for their source
// addresses (127.1.0.0/16).
var turnSources atomic.Uint32

// turnClient speaks the few TURN requests the benchmark needs over one
// socket, with long-term credentials.
type turnClient struct {
	conn         *net.UDPConn
	server       *net.UDPAddr
	user, pass   string
	realm, nonce string
}

// roundTrip sends m and waits for the answer with its transaction ID,
// sending again every 500 ms.
func (c *turnClient) roundTrip(ctx context.Context, m *stun.Message) (*stun.Message, error) {
	buf := make([]byte, 2048)
	for range 10 {
		if _, err := c.conn.WriteToUDP(m.Raw, c.server); err != nil {
			return nil, err
		}
		c.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, _, err := c.conn.ReadFromUDP(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return nil, err
			}
			r := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if r.Decode() == nil && r.TransactionID == m.TransactionID {
				c.conn.SetReadDeadline(time.Time{})
				return r, nil
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("no answer from %s", c.server)
}

// request sends an authenticated request, learning realm and nonce from a
// 401 or 438 first.
func (c *turnClient) request(ctx context.Context, method stun.Method, attrs ...stun.Setter) (*stun.Message, error) {
	for range 3 {
		setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		setters = append(setters, attrs...)
		if c.nonce != "" {
			setters = append(setters, stun.NewUsername(c.user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
				stun.NewLongTermIntegrity(c.user, c.realm, c.pass), stun.Fingerprint)
		}
		m, err := stun.Build(setters...)
		if err != nil {
			return nil, err
		}
		r, err := c.roundTrip(ctx, m)
		if err != nil {
			return nil, err
		}
		if r.Type.Class == stun.ClassSuccessResponse {
			return r, nil
		}
		var ec stun.ErrorCodeAttribute
		_ = ec.GetFrom(r)
		if ec.Code != stun.CodeUnauthorized && ec.Code != stun.CodeStaleNonce {
			return nil, fmt.Errorf("%v: error %d %s", method, ec.Code, ec.Reason)
		}
		var realm stun.Realm
		var nonce stun.Nonce
		if realm.GetFrom(r) != nil || nonce.GetFrom(r) != nil {
			return nil, fmt.Errorf("%v: refused (%d) without a challenge", method, ec.Code)
		}
		c.realm, c.nonce = realm.String(), nonce.String()
	}
	return nil, fmt.Errorf("%v: still challenged after three tries", method)
}

func (c *turnClient) allocate(ctx context.Context) error {
	_, err := c.request(ctx, stun.MethodAllocate,
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}})
	return err
}

// release ends the allocation (a Refresh with LIFETIME 0), best effort.
func (c *turnClient) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, _ = c.request(ctx, stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}})
}

func (c *turnClient) bindChannel(ctx context.Context, ch uint16, peer *net.UDPAddr) error {
	_, err := c.request(ctx, stun.MethodChannelBind,
		stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(ch >> 8), byte(ch), 0, 0}},
		peerAddr{stun.XORMappedAddress{IP: peer.IP, Port: peer.Port}})
	return err
}

// peerAddr is XOR-PEER-ADDRESS.
type peerAddr struct{ a stun.XORMappedAddress }

func (p peerAddr) AddTo(m *stun.Message) error { return p.a.AddToAs(m, stun.AttrXORPeerAddress) }

// waitSTUN waits until a STUN Binding request to addr is answered.
func waitSTUN(ctx context.Context, c *child, addr netip.AddrPort) error {
	if err := coturn.WaitSTUN(ctx, addr, 15*time.Second, c.done); err != nil {
		return fmt.Errorf("%w; output: %s", err, tail(c.out.String(), 1500))
	}
	return nil
}

// coturnProc is coturn's turnserver with one relay thread.
type coturnProc struct {
	p       *coturn.Process
	addr    netip.AddrPort
	cleanup func()
}

const coturnSecret = "relaybench-secret"

func (c *coturnProc) name() string { return "coturn" }

func (c *coturnProc) start(ctx context.Context) error {
	dir, cleanup, err := tempDir()
	if err != nil {
		return err
	}
	c.cleanup = cleanup
	port, err := freePort()
	if err != nil {
		return err
	}
	c.addr = netip.AddrPortFrom(loopback, port)
	c.p, err = coturn.StartServer(ctx, coturn.ServerConfig{
		Dir: dir, Listen: c.addr, Secret: coturnSecret, Realm: "relaybench", Threads: 1,
		MinPort: 20000, MaxPort: 32000,
	}, nil)
	return err
}

func (c *coturnProc) pid() int { return c.p.Pid() }

func (c *coturnProc) stop() {
	if c.p != nil {
		c.p.Stop()
	}
	if c.cleanup != nil {
		c.cleanup()
	}
}

func (c *coturnProc) open(ctx context.Context, n int, o Options) (flowSet, error) {
	return openTURN(ctx, c.addr, coturnSecret, n, o)
}
