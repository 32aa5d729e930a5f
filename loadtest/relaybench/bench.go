package relaybench

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"runtime"
	"slices"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/coturn"
)

// Server names, as --against and the table take them.
const (
	Ticket = "ticket"
	Stream = "stream"
	TURN   = "turn"
	Derper = "derper"
	Coturn = "coturn"
)

// AllServers is every server, in table order.
var AllServers = []string{Ticket, Stream, TURN, Derper, Coturn}

// MaxLoss is the loss a clean step may have.
const MaxLoss = 0.001

// MinPace ends a sweep: a step sent below this share of its offered rate
// shows that the sender is saturated (a TCP server pushing back, or the
// generator's core), and higher steps would offer no more.
const MinPace = 0.9

var loopback = netip.MustParseAddr("127.0.0.1")

// Options configure a run.
type Options struct {
	Servers []string      // from AllServers
	Flows   []int         // flow counts
	Rates   []float64     // offered packets/s, ascending: the steps
	Step    time.Duration // length of each step
	Size    int           // payload bytes
	Batch   int           // datagrams per sendmmsg (UDP servers)
	// Segments are the generator's modes, a table block each: 1 sends
	// datagrams one by one (Batch per sendmmsg), N > 1 sends runs of N
	// same-size datagrams per message with UDP_SEGMENT, as keymesh peers
	// send. Only the UDP servers see the difference; derper and the
	// stream relay get one frame per packet in every mode and are
	// measured once, in the first.
	Segments   []int
	Receivers  int // most receiving sockets or clients
	Repeat     int // runs; the table shows medians and spread
	ServerCore int // core the servers are pinned to
	GenCore    int // core the generator (this process, derpgen) is pinned to
	Bins       Binaries
}

// stepResult is one step against one server.
type stepResult struct {
	target         uint64 // packets the step was to send
	sent, received uint64
	elapsed        time.Duration
	lat            []uint64 // latency histogram
}

type server interface {
	name() string
	start(ctx context.Context) error
	pid() int
	open(ctx context.Context, flows int, o Options) (flowSet, error)
	stop()
}

type flowSet interface {
	step(ctx context.Context, rate float64, d time.Duration) (stepResult, error)
	close()
}

// segmenter is a flowSet whose generator can send segmented runs.
type segmenter interface {
	setSegment(n int)
}

// modes are the generator modes the server is measured in: every one of
// Segments for the UDP servers, the first for the others.
func (o Options) modes(server string) []int {
	if len(o.Segments) == 0 {
		return []int{1}
	}
	if Segments(server) {
		return o.Segments
	}
	return o.Segments[:1]
}

// Segments reports whether the server's generator sends segmented runs
// (the UDP servers), rather than one frame per packet in every mode.
func Segments(server string) bool {
	return server == Ticket || server == TURN || server == Coturn
}

// Step is one measured step.
type Step struct {
	Offered   float64       `json:"offered_pps"`
	Sent      float64       `json:"sent_pps"`
	Delivered float64       `json:"delivered_pps"`
	Loss      float64       `json:"loss"` // 1 - received/sent
	CPU       time.Duration `json:"server_cpu_ns"`
	CPUPerPkt float64       `json:"cpu_us_per_packet"`
	// CoreBusy is the share of the server's core that was busy in the
	// step, by the server or anything else on the machine.
	CoreBusy float64       `json:"core_busy"`
	P50, P99 time.Duration `json:"-"`
	P50us    float64       `json:"p50_us"`
	P99us    float64       `json:"p99_us"`
}

// Sweep is one server at one flow count in one run.
type Sweep struct {
	Server string `json:"server"`
	Flows  int    `json:"flows"`
	// Segment is the generator's mode: datagrams per send message.
	Segment int    `json:"segment"`
	Run     int    `json:"run"`
	Steps   []Step `json:"steps"`
	// Clean is the index in Steps of the step that delivered the most
	// with at most MaxLoss, -1 if every step lost more.
	Clean int `json:"clean"`
	// Overload is the index of the step at twice the clean rate, -1 if none.
	Overload int `json:"overload"`
}

func (s Sweep) clean() (Step, bool) {
	if s.Clean < 0 {
		return Step{}, false
	}
	return s.Steps[s.Clean], true
}

func newServer(name string, b Binaries) (server, error) {
	switch name {
	case Ticket, Stream, TURN:
		return &relayProc{kind: name, bin: b.Relay}, nil
	case Derper:
		return &derperProc{bin: b.Derper, gen: b.Derpgen}, nil
	case Coturn:
		return &coturnProc{}, nil
	}
	return nil, fmt.Errorf("unknown server %q (want one of %v)", name, AllServers)
}

// CheckSetup reports what the run cannot do on this machine.
func CheckSetup(o Options) error {
	n := runtime.NumCPU()
	if o.ServerCore == o.GenCore || o.ServerCore >= n || o.GenCore >= n || o.ServerCore < 0 || o.GenCore < 0 {
		return fmt.Errorf("server core %d and generator core %d: want two different cores of this machine's %d", o.ServerCore, o.GenCore, n)
	}
	if slices.Contains(o.Servers, Coturn) {
		if _, err := exec.LookPath(coturn.ServerProgram); err != nil {
			return fmt.Errorf("coturn: %s not found (install Debian package %s)", coturn.ServerProgram, coturn.Package)
		}
	}
	return nil
}

// Run measures every server at every flow count, Repeat times (servers
// alternate within each run), logging progress to log.
func Run(ctx context.Context, o Options, log io.Writer) ([]Sweep, error) {
	if err := CheckSetup(o); err != nil {
		return nil, err
	}
	// This process is the generator: pin all its threads (the ones made
	// later inherit it, and so do the children until they are re-pinned).
	restore, err := pinSelf(o.GenCore)
	if err != nil {
		return nil, err
	}
	defer restore()
	var sweeps []Sweep
	for run := range o.Repeat {
		for _, name := range o.Servers {
			s, err := newServer(name, o.Bins)
			if err != nil {
				return sweeps, err
			}
			got, err := sweepServer(ctx, s, name, run, o, log)
			sweeps = append(sweeps, got...)
			if err != nil {
				return sweeps, fmt.Errorf("%s: %w", s.name(), err)
			}
		}
	}
	return sweeps, nil
}

func sweepServer(ctx context.Context, s server, name string, run int, o Options, log io.Writer) ([]Sweep, error) {
	if err := s.start(ctx); err != nil {
		s.stop()
		return nil, err
	}
	defer s.stop()
	if err := pin(s.pid(), o.ServerCore); err != nil {
		return nil, err
	}
	var out []Sweep
	for _, n := range o.Flows {
		fs, err := s.open(ctx, n, o)
		if err != nil {
			return out, fmt.Errorf("%d flows: %w", n, err)
		}
		// Threads the server made for the new flows inherit its pinning;
		// pin again in case it forked helpers.
		if err := pin(s.pid(), o.ServerCore); err != nil {
			fs.close()
			return out, err
		}
		modes := o.modes(name)
		for _, seg := range modes {
			if sg, ok := fs.(segmenter); ok {
				sg.setSegment(seg)
			}
			sw, err := sweep(ctx, s, fs, name, n, seg, run, o, log)
			out = append(out, sw)
			if err != nil {
				fs.close()
				return out, fmt.Errorf("%d flows, segment %d: %w", n, seg, err)
			}
		}
		fs.close()
	}
	return out, nil
}

// sweep steps the offered load up until a step loses more than MaxLoss or
// the sender falls below MinPace, then offers twice the highest rate
// delivered cleanly.
func sweep(ctx context.Context, s server, fs flowSet, name string, n, seg, run int, o Options, log io.Writer) (Sweep, error) {
	sw := Sweep{Server: name, Flows: n, Segment: seg, Run: run, Clean: -1, Overload: -1}
	measure := func(rate float64) (Step, error) {
		cpu0, err := coturn.ProcessCPU(s.pid())
		if err != nil {
			return Step{}, err
		}
		core0, _ := readCore(o.ServerCore)
		r, err := fs.step(ctx, rate, o.Step)
		if err != nil {
			return Step{}, err
		}
		cpu1, err := coturn.ProcessCPU(s.pid())
		if err != nil {
			return Step{}, fmt.Errorf("server gone: %w", err)
		}
		core1, _ := readCore(o.ServerCore)
		st := stepOf(rate, r, cpu1-cpu0)
		st.CoreBusy = busyBetween(core0, core1)
		fmt.Fprintf(log, "  %-26s %5d flows  %2d/send  run %d  offered %7.0f  sent %7.0f  delivered %7.0f pps  loss %6.2f%%  cpu %5.2f µs/pkt  core %3.0f%% busy  p50 %6.0f µs  p99 %7.0f µs\n",
			s.name(), n, seg, run+1, st.Offered, st.Sent, st.Delivered, 100*st.Loss, st.CPUPerPkt, 100*st.CoreBusy, st.P50us, st.P99us)
		return st, nil
	}
	// A short unrecorded step first: the server's first packets on new
	// sockets and connections cost more than the steady state.
	if _, err := fs.step(ctx, o.Rates[0], min(o.Step, 500*time.Millisecond)); err != nil {
		return sw, fmt.Errorf("warm-up: %w", err)
	}
	for _, rate := range o.Rates {
		st, err := measure(rate)
		if err != nil {
			return sw, err
		}
		sw.Steps = append(sw.Steps, st)
		if !st.clean() {
			break
		}
		if c, ok := sw.clean(); !ok || st.Delivered > c.Delivered {
			sw.Clean = len(sw.Steps) - 1
		}
		if st.Sent < MinPace*st.Offered {
			break
		}
	}
	over := o.Rates[0] * 2
	if c, ok := sw.clean(); ok {
		over = 2 * c.Delivered
	}
	st, err := measure(over)
	if err != nil {
		return sw, err
	}
	sw.Steps = append(sw.Steps, st)
	sw.Overload = len(sw.Steps) - 1
	return sw, nil
}

// clean reports whether the step lost at most MaxLoss.
func (s Step) clean() bool { return s.Loss <= MaxLoss }

func stepOf(rate float64, r stepResult, cpu time.Duration) Step {
	secs := r.elapsed.Seconds()
	st := Step{Offered: rate, CPU: cpu}
	if secs > 0 {
		st.Sent = float64(r.sent) / secs
		st.Delivered = float64(r.received) / secs
	}
	if r.sent > 0 {
		st.Loss = max(0, 1-float64(r.received)/float64(r.sent))
	}
	if r.received > 0 {
		st.CPUPerPkt = float64(cpu.Nanoseconds()) / 1e3 / float64(r.received)
	}
	st.P50, st.P99 = quantile(r.lat, 0.5), quantile(r.lat, 0.99)
	st.P50us, st.P99us = float64(st.P50.Nanoseconds())/1e3, float64(st.P99.Nanoseconds())/1e3
	return st
}
