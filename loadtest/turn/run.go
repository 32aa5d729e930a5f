package turn

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/coturn"
)

const (
	benchRealm  = "keymesh.bench"
	benchSecret = "loadtest-relay-shared-secret-0123456789"
)

var benchLoopback = netip.MustParseAddr("127.0.0.1")

// relayResult is one table row: one server at one allocation count.
type relayResult struct {
	server      string
	allocations int
	size        int
	interval    time.Duration
	messages    int

	sent, received, lost int64
	failedProcs          int

	steadyPackets int64         // packets relayed and echoed back in the steady window
	steadyTime    time.Duration // its length
	steadyCPU     time.Duration // server CPU in it
	runTime       time.Duration // first client start to last client exit
	runCPU        time.Duration // server CPU over the run
}

// offered is the relayed packet rate the load asks for: each message crosses
// the relay twice (to the peer and back).
func (r relayResult) offered() float64 {
	return 2 * float64(r.allocations) * float64(time.Second) / float64(r.interval)
}

// rate is the relayed packet rate in the steady window, counting the
// messages that came back: each crossed the relay twice. Messages lost on
// the way do not count, so this is goodput.
func (r relayResult) rate() float64 {
	if r.steadyTime <= 0 {
		return 0
	}
	return float64(r.steadyPackets) / r.steadyTime.Seconds()
}

func (r relayResult) mbps() float64 { return r.rate() * float64(r.size) * 8 / 1e6 }

func (r relayResult) lossPercent() float64 {
	if r.sent == 0 {
		return 100
	}
	return 100 * float64(r.lost) / float64(r.sent)
}

// cpuPercent is the server's CPU in the steady window, in % of one core.
func (r relayResult) cpuPercent() float64 {
	if r.steadyTime <= 0 {
		return 0
	}
	return 100 * r.steadyCPU.Seconds() / r.steadyTime.Seconds()
}

// cpuPerPacket is server CPU per relayed packet in the steady window.
func (r relayResult) cpuPerPacket() time.Duration {
	if r.steadyPackets == 0 {
		return 0
	}
	return r.steadyCPU / time.Duration(r.steadyPackets)
}

func (r relayResult) summary() string {
	return fmt.Sprintf("sent %d, received %d, lost %.3f%%, %.0f pkt/s steady (offered %.0f), CPU %.0f%% of a core, %v/pkt, run %s",
		r.sent, r.received, r.lossPercent(), r.rate(), r.offered(), r.cpuPercent(),
		r.cpuPerPacket().Round(10*time.Nanosecond), r.runTime.Round(100*time.Millisecond))
}

// rowInterval is the per-allocation interval for n allocations: the
// configured one, stretched when --max-rate caps the offered rate.
func rowInterval(o relayOpts, n int) time.Duration {
	iv := o.interval
	if o.maxRate > 0 {
		if min := time.Duration(int64(n) * int64(time.Second) / int64(o.maxRate)); min > iv {
			iv = min
		}
	}
	return iv.Round(time.Millisecond)
}

// relayRow measures one server at n allocations.
func relayRow(ctx context.Context, o relayOpts, name string, n int) (relayResult, error) {
	iv := rowInterval(o, n)
	msgs := o.messages
	if msgs == 0 {
		msgs = max(1, int(o.duration/iv))
	}
	res := relayResult{server: name, allocations: n, size: o.size, interval: iv, messages: msgs}

	peers := make([]netip.AddrPort, o.peers)
	for i := range peers {
		port, err := coturn.FreePort(benchLoopback)
		if err != nil {
			return res, err
		}
		peers[i] = netip.AddrPortFrom(benchLoopback, port)
		p, err := coturn.StartPeer(ctx, peers[i])
		if err != nil {
			return res, err
		}
		defer p.Stop()
	}

	var (
		srv benchServer
		err error
	)
	switch name {
	case "ours":
		log := slog.New(slog.DiscardHandler)
		if o.relayLog {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		srv, err = startOurs(ctx, o.sockets, log)
	default:
		srv, err = startCoturn(ctx, o.threads)
	}
	if err != nil {
		return res, err
	}
	defer srv.stop()

	// Bound the row: connecting (0.1 s a session in each process, more on a busy machine), uclient's
	// random start (up to 6 s), sending, and its 10 s wait for stragglers.
	procs := (n + o.perProcess - 1) / o.perProcess
	limit := time.Duration(min(n, o.perProcess))*500*time.Millisecond + 6*time.Second +
		time.Duration(msgs)*iv + 45*time.Second
	rctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()

	cpuStart, err := srv.cpu()
	if err != nil {
		return res, err
	}
	sampler := newCPUSampler(srv.cpu)
	go sampler.run(rctx, 200*time.Millisecond)

	prog := &progressLog{last: make([]int64, procs)}
	started := time.Now()
	clients := make([]*coturn.Process, procs)
	for i := range procs {
		cfg := coturn.ClientConfig{
			Server: srv.addr(o.tcp), TCP: o.tcp,
			// A loopback address of its own per process: uclient leaves
			// a probe allocation behind each session, and a later socket
			// that reuses its port would get 437 Allocation Mismatch.
			Local:  netip.AddrFrom4([4]byte{127, 2, byte(i / 250), byte(1 + i%250)}),
			Peer:   peers[i%len(peers)],
			Secret: benchSecret, User: fmt.Sprintf("bench%d", i),
			Clients: n/procs + btoi(i < n%procs), Messages: msgs, Size: o.size, Interval: iv,
		}
		p, err := coturn.StartClient(rctx, cfg, prog.lineFunc(i))
		if err != nil {
			for _, c := range clients[:i] {
				c.Stop()
			}
			return res, err
		}
		clients[i] = p
	}
	var firstErr error
	for i, p := range clients {
		werr := p.Wait(rctx)
		if werr != nil {
			p.Stop()
		}
		if o.clientLogs != "" {
			name := filepath.Join(o.clientLogs, fmt.Sprintf("uclient-%s-%d-%d.log", name, n, i))
			if err := os.WriteFile(name, p.Output(), 0o644); err != nil {
				return res, fmt.Errorf("--client-logs: %w", err)
			}
		}
		rep, perr := coturn.ParseReport(p.Output())
		if werr != nil || perr != nil {
			res.failedProcs++
			if firstErr == nil {
				firstErr = fmt.Errorf("uclient %d: exit %v, report %v: %s", i, werr, perr, tail(p.Output(), 300))
			}
			continue
		}
		res.sent += rep.Sent
		res.received += rep.Received
		res.lost += rep.Lost
	}
	res.runTime = time.Since(started)
	cpuEnd, err := srv.cpu()
	if err != nil {
		return res, err
	}
	res.runCPU = cpuEnd - cpuStart
	cancel()
	if res.failedProcs == procs {
		return res, firstErr
	}
	if firstErr != nil {
		fmt.Fprintf(os.Stderr, "relay: %d of %d uclient processes failed; first: %v\n", res.failedProcs, procs, firstErr)
	}

	from, to, packets, ok := prog.steadyWindow(o.window)
	if !ok || packets == 0 {
		// Too short for a window: the whole run.
		from, to, packets = started, started.Add(res.runTime), 2*res.received
	}
	res.steadyPackets, res.steadyTime = packets, to.Sub(from)
	res.steadyCPU = sampler.between(from, to)
	return res, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
