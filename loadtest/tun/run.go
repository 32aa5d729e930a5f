package tun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/internal/testutil/bintest"
	"github.com/keymesh/keymesh/loadtest/labrun"
)

// The WireGuard tunnel's addresses: unique-local, inside the namespaces.
var wgAddrA, wgAddrB = netip.MustParseAddr("fdaa::1"), netip.MustParseAddr("fdaa::2")

// measureTUN runs every measurement in one lab: two hosts on the public
// segment, so the keymesh session takes the direct path and WireGuard the
// same link.
func measureTUN(ctx context.Context, o tunOpts, bins bintest.Binaries, wgBin string, log *slog.Logger) ([]tunRow, error) {
	lab, err := labrun.Start(ctx, labrun.Config{Bins: bins, Logger: log})
	if err != nil {
		return nil, err
	}
	defer lab.Close()
	sa, err := lab.AddSite(ctx, "a", natlab.Public)
	if err != nil {
		return nil, err
	}
	sb, err := lab.AddSite(ctx, "b", natlab.Public)
	if err != nil {
		return nil, err
	}
	ha, hb := sa.Host(), sb.Host()
	ka, err := lab.NewKey("a")
	if err != nil {
		return nil, err
	}
	peerArgs := []string{"--tun", "km0"}
	if o.profile != "" {
		peerArgs = append(peerArgs, "--pprof")
	}
	b, err := lab.StartPeer(ctx, hb, labrun.PeerConfig{Name: "b", Allow: []string{ka.ID}, Args: peerArgs})
	if err != nil {
		return nil, err
	}
	a, err := lab.StartPeer(ctx, ha, labrun.PeerConfig{Name: "a", Key: ka, Args: peerArgs})
	if err != nil {
		return nil, err
	}
	for _, p := range []*labrun.Peer{a, b} {
		if _, err := p.WaitRegistered(ctx, 15*time.Second); err != nil {
			return nil, err
		}
	}
	direct := false
	_, _ = a.Ping(ctx, b.ID, labrun.PingOptions{Interval: 100 * time.Millisecond, Timeout: 5 * time.Second}, func(r labrun.PingReply) bool {
		direct = r.OK() && r.Path == "direct"
		return !direct
	})
	if !direct {
		return nil, fmt.Errorf("no direct path between the two public hosts")
	}
	bid, err := crypto.ParsePeerID(b.ID)
	if err != nil {
		return nil, err
	}
	bOverlay := bid.OverlayAddr()

	srv := hb.Command(ctx, "iperf3", "-s")
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("iperf3 server: %w", err)
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	time.Sleep(300 * time.Millisecond)

	var rows []tunRow
	iperf := func(path string, mtu int, dst netip.Addr, udp bool) error {
		args := []string{"-c", dst.String(), "-t", strconv.Itoa(o.secs), "-J"}
		if udp {
			// 1200-byte datagrams fit both tunnels' MTU; -b 0: as fast
			// as the sender can.
			args = append(args, "-u", "-b", "0", "-l", "1200")
		}
		// The keymesh routers' counters before and after: what A carried
		// into the session and B never got was lost inside the tunnel.
		keymesh := strings.HasPrefix(path, "keymesh")
		var sent0, recv0 uint64
		if keymesh {
			sent0, _ = routerCounters(ctx, a)
			_, recv0 = routerCounters(ctx, b)
		}
		var wait func() error
		if path == "keymesh TUN TCP" && o.profile != "" {
			wait = profile(ctx, o.profile, time.Duration(o.secs)*time.Second, a, b)
		}
		var out []byte
		var err error
		// The first run may wait for the session or the handshake.
		for try := 0; try < 3; try++ {
			out, err = ha.Command(ctx, "iperf3", args...).Output()
			if err == nil {
				break
			}
			time.Sleep(time.Second)
		}
		if wait != nil {
			if werr := wait(); werr != nil {
				return fmt.Errorf("%s: CPU profiles: %w", path, werr)
			}
		}
		if err != nil {
			return fmt.Errorf("%s: iperf3: %w: %s", path, err, out)
		}
		bps, loss, retx, err := iperf3Result(out)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		row := tunRow{Path: path, Tool: "iperf3", MTU: mtu, MBps: bps / 1e6, LossPct: loss, Retransmits: retx}
		if keymesh {
			sent1, _ := routerCounters(ctx, a)
			_, recv1 := routerCounters(ctx, b)
			row.TunnelLost = int64(sent1-sent0) - int64(recv1-recv0)
		}
		rows = append(rows, row)
		fmt.Fprintf(os.Stderr, "%s: %.1f MB/s, %d retransmits, %d lost inside the tunnel\n", path, bps/1e6, retx, row.TunnelLost)
		return nil
	}
	if err := iperf("keymesh TUN TCP", 1280, bOverlay, false); err != nil {
		return nil, err
	}
	if err := iperf("keymesh TUN UDP", 1280, bOverlay, true); err != nil {
		return nil, err
	}
	for _, p := range []*labrun.Peer{a, b} {
		if st, err := p.Status(ctx); err == nil && st.Packets != nil {
			fmt.Fprintf(os.Stderr, "%s's packet counters: %+v\n", p.Name, *st.Packets)
		}
	}

	// The QUIC stream between the same two peers: `peer pipe` to `peer listen`.
	src := labrun.NewSource(o.stream, 0, 1)
	res, err := labrun.Transfer(ctx, a, b, src, 2*time.Minute)
	if err != nil {
		return nil, fmt.Errorf("QUIC stream: %w", err)
	}
	if !res.OK() {
		return nil, fmt.Errorf("QUIC stream: %d of %d bytes arrived intact", res.Received, res.Sent)
	}
	rows = append(rows, tunRow{Path: "keymesh QUIC stream", Tool: "peer pipe", MTU: 0, MBps: float64(res.Received) / res.Took.Seconds() / 1e6,
		Note: fmt.Sprintf("%d MiB, SHA-256 checked", res.Received>>20)})
	fmt.Fprintf(os.Stderr, "keymesh QUIC stream: %.1f MB/s\n", rows[len(rows)-1].MBps)

	// wireguard-go between the same namespaces.
	stop, err := startWireguard(ctx, lab.Work, wgBin, ha, hb, sa.PublicAddr, sb.PublicAddr)
	if err != nil {
		return nil, err
	}
	defer stop()
	if err := iperf("wireguard-go TCP", 1420, wgAddrB, false); err != nil {
		return nil, err
	}
	if err := iperf("wireguard-go UDP", 1420, wgAddrB, true); err != nil {
		return nil, err
	}
	// Keymesh's QUIC stream row has no wireguard-go counterpart; put the
	// iperf3 rows of each tunnel together.
	return []tunRow{rows[0], rows[3], rows[1], rows[4], rows[2]}, nil
}

// profile takes the CPU profiles of peers, each over d, in the background
// and writes them to dir/<name>-cpu.pprof; the returned function waits for
// them.
func profile(ctx context.Context, dir string, d time.Duration, peers ...*labrun.Peer) func() error {
	errs := make(chan error, len(peers))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return func() error { return err }
	}
	for _, p := range peers {
		go func() {
			b, err := (&daemon.Client{Socket: p.Socket}).CPUProfile(ctx, d)
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, p.Name+"-cpu.pprof"), b, 0o644)
			}
			errs <- err
		}()
	}
	return func() error {
		var all []error
		for range peers {
			all = append(all, <-errs)
		}
		return errors.Join(all...)
	}
}

// routerCounters returns the packets p's overlay router sent to peers and
// received from them (zero when its status has none).
func routerCounters(ctx context.Context, p *labrun.Peer) (sent, received uint64) {
	st, err := p.Status(ctx)
	if err != nil || st.Packets == nil {
		return 0, 0
	}
	return st.Packets.Sent, st.Packets.Received
}

// startWireguard runs wireguard-go (wga in A, wgb in B) and configures it
// with wg(8) and ip(8): A at fdaa::1, B at fdaa::2, endpoints the hosts'
// public addresses. The returned function stops both.
func startWireguard(ctx context.Context, work, bin string, ha, hb *natlab.Host, pa, pb netip.Addr) (func(), error) {
	// Each side has its own interface name: wireguard-go's control socket
	// (/var/run/wireguard/<name>.sock) lives in the shared filesystem.
	type side struct {
		h    *natlab.Host
		dev  string
		addr netip.Addr
		key  string
		pub  string
		cmd  *exec.Cmd
	}
	sides := []*side{{h: ha, dev: "wga", addr: wgAddrA}, {h: hb, dev: "wgb", addr: wgAddrB}}
	var stops []func()
	stop := func() {
		for _, s := range stops {
			s()
		}
	}
	for i, s := range sides {
		priv, err := exec.CommandContext(ctx, "wg", "genkey").Output()
		if err != nil {
			return stop, fmt.Errorf("wg genkey: %w", err)
		}
		s.key = filepath.Join(work, fmt.Sprintf("wg%d.key", i))
		if err := os.WriteFile(s.key, priv, 0o600); err != nil {
			return stop, err
		}
		c := exec.CommandContext(ctx, "wg", "pubkey")
		c.Stdin = strings.NewReader(string(priv))
		pub, err := c.Output()
		if err != nil {
			return stop, fmt.Errorf("wg pubkey: %w", err)
		}
		s.pub = strings.TrimSpace(string(pub))
		s.cmd = s.h.Command(ctx, bin, "-f", s.dev)
		s.cmd.Env = append(os.Environ(), "LOG_LEVEL=error")
		if err := s.cmd.Start(); err != nil {
			return stop, fmt.Errorf("wireguard-go: %w", err)
		}
		cmd := s.cmd
		stops = append(stops, func() {
			cmd.Process.Signal(os.Interrupt) // removes its control socket
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(3 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
	}
	for i, s := range sides {
		peer, peerAddr := sides[1-i], []netip.Addr{pa, pb}[1-i]
		if err := waitFor(ctx, 5*time.Second, func() bool {
			_, err := s.h.Run(ctx, "ip", "link", "show", s.dev)
			return err == nil
		}); err != nil {
			return stop, fmt.Errorf("wireguard-go made no %s in %s", s.dev, s.h.Name)
		}
		for _, args := range [][]string{
			{"wg", "set", s.dev, "private-key", s.key, "listen-port", "51820",
				"peer", peer.pub, "allowed-ips", peer.addr.String() + "/128", "endpoint", netip.AddrPortFrom(peerAddr, 51820).String()},
			{"sysctl", "-qw", "net.ipv6.conf." + s.dev + ".disable_ipv6=0"},
			{"ip", "-6", "addr", "add", s.addr.String() + "/64", "dev", s.dev, "nodad"},
			{"ip", "link", "set", s.dev, "up"},
		} {
			if out, err := s.h.Run(ctx, args[0], args[1:]...); err != nil {
				return stop, fmt.Errorf("%s in %s: %w: %s", strings.Join(args, " "), s.h.Name, err, out)
			}
		}
	}
	return stop, nil
}
