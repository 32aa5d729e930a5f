package attack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/keymesh/keymesh/internal/wire"
)

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
