package relaybench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/relayclient"
	"github.com/keymesh/keymesh/internal/streamclient"
	"github.com/keymesh/keymesh/internal/wire"
)

// relayProc is cmd/relay serving one of its three relays on loopback, its
// limits lifted for one busy loopback source (the limiters stay in the
// path, so their cost is measured).
type relayProc struct {
	kind    string // "ticket", "stream" or "turn"
	bin     string
	c       *child
	dir     string
	cleanup func()
	udp     netip.AddrPort // ticket relay
	tls     netip.AddrPort // stream relay
	turn    netip.AddrPort // TURN
	id      *crypto.Identity
	secret  string
}

func (r *relayProc) name() string {
	switch r.kind {
	case "ticket":
		return "keymesh ticket relay"
	case "stream":
		return "keymesh TLS stream relay"
	}
	return "keymesh TURN"
}

func (r *relayProc) start(ctx context.Context) error {
	dir, cleanup, err := tempDir()
	if err != nil {
		return err
	}
	r.dir, r.cleanup = dir, cleanup
	if r.id, err = crypto.GenerateIdentity(nil); err != nil {
		return err
	}
	keyFile := filepath.Join(dir, "relay.key")
	if err := crypto.WriteKeyFile(keyFile, r.id); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	r.udp = netip.AddrPortFrom(loopback, port)
	big := strconv.Itoa(1 << 30)
	args := []string{"--dev", "--key", keyFile, "--admin", "", "--listen", r.udp.String(), "--reuseport", "1",
		"--log-level", "warn",
		"--rate-limit", big, "--rate-limit-burst", big, "--bind-rate", big, "--bind-burst", big,
		"--challenge-rate", big, "--challenge-burst", big, "--binds-per-second", "-1",
		"--allow-destinations", "127.0.0.0/8"}
	switch r.kind {
	case "stream":
		p, err := freePort()
		if err != nil {
			return err
		}
		r.tls = netip.AddrPortFrom(loopback, p)
		args = append(args, "--tls-listen", r.tls.String(),
			"--stream-rate", big, "--stream-burst", big, "--stream-byte-rate", big, "--stream-ip-byte-rate", big,
			"--stream-max-tunnels", "20000", "--stream-max-tunnels-per-ip", "20000", "--stream-max-tunnels-per-net", "20000",
			"--stream-open-rate", big, "--stream-open-burst", big, "--stream-probe-rate", big, "--stream-probe-burst", big,
			"--stream-unsolicited-rate", big, "--stream-unsolicited-burst", big)
	case "turn":
		p, err := freePort()
		if err != nil {
			return err
		}
		r.turn = netip.AddrPortFrom(loopback, p)
		r.secret = "relaybench-secret"
		sf := filepath.Join(dir, "turn.secret")
		if err := os.WriteFile(sf, []byte(r.secret), 0o600); err != nil {
			return err
		}
		args = append(args, "--turn-listen", r.turn.String(), "--turn-secret-file", sf, "--turn-sockets", "1",
			"--turn-quota", "-1", "--turn-max-allocations", "-1", "--turn-allocation-rate", "-1",
			"--turn-challenge-rate", "-1", "--turn-binding-rate", "-1")
	}
	if r.c, err = startChild(ctx, r.bin, args...); err != nil {
		return err
	}
	switch r.kind {
	case "stream":
		return waitTCP(ctx, r.c, r.tls)
	case "turn":
		return waitSTUN(ctx, r.c, r.turn)
	}
	return r.waitBind(ctx)
}

// waitBind waits until the ticket relay answers a bind.
func (r *relayProc) waitBind(ctx context.Context) error {
	c, err := listenLoopback()
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		bctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := relayclient.Bind(bctx, c, net.UDPAddrFromAddrPort(r.udp), r.id)
		cancel()
		if err == nil {
			return nil
		}
		if e := r.c.exited(); e != nil {
			return e
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("relay on %s does not bind: %w; output: %s", r.udp, err, tail(r.c.out.String(), 1500))
		}
	}
}

func (r *relayProc) pid() int { return r.c.pid() }

func (r *relayProc) stop() {
	if r.c != nil {
		r.c.stop()
	}
	if r.cleanup != nil {
		r.cleanup()
	}
}

func (r *relayProc) open(ctx context.Context, n int, o Options) (flowSet, error) {
	switch r.kind {
	case "stream":
		return r.openStream(ctx, n, o)
	case "turn":
		return openTURN(ctx, r.turn, r.secret, n, o)
	}
	return r.openTicket(ctx, n, o)
}

// openTicket binds one ticket per receiver and makes each flow a RelaySend
// to its receiver's ticket.
func (r *relayProc) openTicket(ctx context.Context, n int, o Options) (flowSet, error) {
	sk, err := openSinks(min(n, o.Receivers))
	if err != nil {
		return nil, err
	}
	tickets := make([][]byte, len(sk.conns))
	for i, c := range sk.conns {
		id, err := crypto.GenerateIdentity(nil)
		if err != nil {
			sk.close()
			return nil, err
		}
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		b, err := relayclient.Bind(bctx, c, net.UDPAddrFromAddrPort(r.udp), id)
		cancel()
		if err != nil {
			sk.close()
			return nil, fmt.Errorf("bind receiver %d: %w", i, err)
		}
		tickets[i] = b.Ticket
	}
	u, err := newUDPFlows(net.IPv4(127, 0, 0, 1), n, o.Batch, net.UDPAddrFromAddrPort(r.udp), wire.RelaySendOverhead)
	if err != nil {
		sk.close()
		return nil, err
	}
	u.sinks = sk
	payload := make([]byte, o.Size)
	for i := range n {
		u.frames = append(u.frames, wire.AppendRelaySend(nil, tickets[i%len(tickets)], uint64(i), payload))
	}
	sk.run(u.rec, wire.DataOverhead)
	return u, nil
}

// streamFlows sends each flow's datagrams into its own tunnel, addressed
// to its receiver.
type streamFlows struct {
	rec     *recorder
	sinks   *sinks
	tunnels []*streamclient.Tunnel
	dst     []*net.UDPAddr
	size    int
}

func (r *relayProc) openStream(ctx context.Context, n int, o Options) (flowSet, error) {
	sk, err := openSinks(min(n, o.Receivers))
	if err != nil {
		return nil, err
	}
	s := &streamFlows{rec: newRecorder(), sinks: sk, size: o.Size}
	target, err := streamclient.ParseTarget(fmt.Sprintf("wss://%s%s#%s", r.tls, streamclient.Path, r.id.ID()))
	if err != nil {
		sk.close()
		return nil, err
	}
	for i := range n {
		id, err := crypto.GenerateIdentity(nil)
		if err != nil {
			s.close()
			return nil, err
		}
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		t, err := streamclient.Dial(dctx, target, id, nil)
		cancel()
		if err != nil {
			s.close()
			return nil, fmt.Errorf("tunnel %d: %w", i, err)
		}
		s.tunnels = append(s.tunnels, t)
		s.dst = append(s.dst, sk.addr(i))
		// The receiver speaks first, as a peer would: a tunnel sends at
		// its full rate only to an address that has sent to its presence.
		if _, err := sk.conns[i%len(sk.conns)].WriteToUDPAddrPort([]byte("hello"), t.Presence()); err != nil {
			s.close()
			return nil, err
		}
	}
	sk.run(s.rec, 0)
	return s, nil
}

func (s *streamFlows) step(ctx context.Context, rate float64, d time.Duration) (stepResult, error) {
	phase := s.rec.begin()
	payload := make([]byte, s.size)
	start := time.Now()
	target := stepTarget(rate, d)
	var sent uint64
	k := 0
	for sent < target {
		el := time.Since(start)
		if el >= 2*d+time.Second || ctx.Err() != nil {
			break // hopelessly behind
		}
		due := min(target, uint64(el.Seconds()*rate)+1)
		if sent >= due {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		for sent < due {
			s.rec.stamp(payload, phase)
			if _, err := s.tunnels[k].WriteTo(payload, s.dst[k]); err != nil {
				return stepResult{}, fmt.Errorf("tunnel %d: %w", k, err)
			}
			sent++
			k = (k + 1) % len(s.tunnels)
		}
	}
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return stepResult{}, ctx.Err()
	}
	got, lat := s.rec.end()
	return stepResult{target: target, sent: sent, received: got, elapsed: elapsed, lat: lat}, nil
}

func (s *streamFlows) close() {
	for _, t := range s.tunnels {
		t.Close()
	}
	s.sinks.close()
}
