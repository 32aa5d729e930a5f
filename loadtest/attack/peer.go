package attack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// peerListen is the real peer daemon's UDP address in the legitimate
// namespace (outside the addresses the population uses).
var peerListen = netip.MustParseAddrPort("100.65.253.1:41641")

// peerReflect runs a real `peer up --allow-any` and has registered bot
// keys, each claiming 16 candidates in the spoofed range (addresses of
// victims), Connect to it: every Punch the rendezvous forwards makes the
// peer probe all 16 victims. What reaches the victims (routed back to the
// attacker's namespace, counted there) is set against the Connects.
func peerReflect(ctx context.Context, e *env) error {
	if e.bins.Peer == "" {
		return errors.New("needs the peer binary (Binaries.Peer)")
	}
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return err
	}
	keyFile := filepath.Join(e.work, "peer.key")
	if err := crypto.WriteKeyFile(keyFile, id); err != nil {
		return err
	}
	p, err := startProc(context.WithoutCancel(ctx), e.lab, e.lab.Leg, "peer", e.bins.Peer, []string{"up",
		"--server", fmt.Sprintf("%s#%s", e.srv.rzAddr, e.srv.rzKey),
		"--key", keyFile,
		"--socket", filepath.Join(e.work, "peer.sock"),
		"--listen", peerListen.String(),
		"--allow-any",
		"--log-level", "warn",
	}, nil)
	if err != nil {
		return err
	}
	defer p.stop()
	target := id.ID()
	// The victims: sockets on addresses of the attacker's namespace that
	// count what reaches them.
	victims := make([]netip.AddrPort, wire.MaxCandidates)
	for i := range victims {
		ap := netip.AddrPortFrom(botAddr(200+i), 9)
		c, err := listenUDP(e.lab.Bad, ap)
		if err != nil {
			return err
		}
		defer c.Close()
		victims[i] = ap
		go func() {
			buf := make([]byte, 2048)
			for {
				n, _, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				e.victimBytes.Add(int64(n))
			}
		}()
	}
	bots(ctx, 16, func(ctx context.Context, i int) {
		conn, cur, err := botSocket(e, 100+i)
		if err != nil {
			return
		}
		defer conn.Close()
		// A fresh key for each Connect: the peer keeps one probe schedule
		// per requesting key.
		for ctx.Err() == nil {
			c, _, err := botRegisterWith(ctx, e, conn, cur, victims)
			if err != nil {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			r, err := c.ConnectPeer(cctx, target)
			cancel()
			wait := 100 * time.Millisecond // the peer is not registered yet
			if err == nil && r.Found {
				e.held.Add(1)
				wait = peerPace
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
	})
	// The probes of the last Punches are still on their way: count them
	// for a while (they answer requests the attacker already sent).
	time.Sleep(peerDrain)
	return nil
}

// peerPace is how long each bot waits between its Connects: the attack
// is about what one Connect costs the peer, not about the rendezvous'
// rate limit.
const peerPace = time.Second

// peerDrain is how long the victims keep counting after the attack: a
// peer's probe schedule after a Punch lasts a few seconds.
const peerDrain = 3 * time.Second
