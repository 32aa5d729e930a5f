// Package attack is `loadtest attack`: an attack suite against the real
// rendezvous and relay binaries. It builds a small lab of network
// namespaces (servers, legitimate peers, attacker, router), starts the
// servers fresh for each attack, keeps a population of legitimate peers
// registering, connecting, binding and relaying at a steady rate, runs one
// attack at a stated rate, and reports the legitimate success rate and p99
// latency, attacker bytes in against server bytes out, and the servers' CPU
// and resident memory from /proc. Spoofed sources are written with a raw
// socket in the attacker's namespace, and what the servers send back to
// them is dropped there: nothing leaves the lab.
package attack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config configures a run of the suite.
type Config struct {
	Bins Binaries
	// Attacks are the names to run (empty: all, in suite order).
	Attacks []string
	// Rate is each flood's rate.
	Rate Rate
	// Duration is how long each attack lasts.
	Duration time.Duration
	// LegitRate is how many of each legitimate operation start per second.
	LegitRate float64
	// Peers is the number of long-lived legitimate peers.
	Peers int
	// Workers are the goroutines that write each flood.
	Workers int
	// MaxHeld caps what a holding attack (TURN allocations, tunnels)
	// takes, to bound the attacker's own sockets.
	MaxHeld    int
	Thresholds Thresholds
	// JoinToken runs the rendezvous with a random join token that the
	// legitimate peers know and the attacker does not.
	JoinToken bool
	// RendezvousArgs and RelayArgs are extra server flags (a defence to
	// switch on, a cap to set).
	RendezvousArgs, RelayArgs []string
	// Prefix names the lab's namespaces; default random.
	Prefix string
	// OnStart and OnDone report progress (may be nil).
	OnStart func(name string)
	OnDone  func(Result)
	Logger  *slog.Logger
}

func (c *Config) defaults() error {
	if c.Rate.Bits <= 0 && c.Rate.Packets <= 0 {
		c.Rate = Rate{Bits: 100e6}
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.LegitRate <= 0 {
		c.LegitRate = 20
	}
	if c.Peers < 2 {
		c.Peers = 16
	}
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.MaxHeld <= 0 {
		c.MaxHeld = 20000
	}
	if c.Thresholds == (Thresholds{}) {
		c.Thresholds = DefaultThresholds
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Bins.Rendezvous == "" || c.Bins.Relay == "" {
		return errors.New("attack: Config.Bins is required")
	}
	_, err := Select(c.Attacks)
	return err
}

// Short makes cfg the suite's short form, for CI: every attack for 2.5 s,
// 20 legitimate operations of each kind per second, 8 long-lived peers
// (about a minute for the whole suite on two cores).
func (c *Config) Short() {
	c.Duration, c.LegitRate, c.Peers = 2500*time.Millisecond, 20, 8
}

// Select returns the attacks named (all for none), in suite order.
func Select(names []string) ([]Attack, error) {
	all := Attacks()
	if len(names) == 0 {
		return all, nil
	}
	var out []Attack
	for _, a := range all {
		if slices.Contains(names, a.Name) {
			out = append(out, a)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(all, func(a Attack) bool { return a.Name == n }) {
			return nil, fmt.Errorf("unknown attack %q: want one of %s", n, strings.Join(Names(), ", "))
		}
	}
	return out, nil
}

// Names lists the attacks.
func Names() []string {
	var n []string
	for _, a := range Attacks() {
		n = append(n, a.Name)
	}
	return n
}

// Result is one attack's outcome.
type Result struct {
	Attack  string `json:"attack"`
	Summary string `json:"summary"`
	Check   Check  `json:"check"`
	Spoofed bool   `json:"spoofed"`
	// Duration is how long the attack ran.
	Duration time.Duration `json:"duration_ns"`
	// SentPackets and SentBytes (UDP payload) are what a flood wrote;
	// AchievedBits and AchievedPPS its rate.
	SentPackets  int64   `json:"sent_packets"`
	SentBytes    int64   `json:"sent_bytes"`
	AchievedBits float64 `json:"achieved_bits_per_s"`
	AchievedPPS  float64 `json:"achieved_pps"`
	// Held is what a holding attack got: registry records, TURN
	// allocations or tunnels.
	Held int64 `json:"held"`
	// InBytes is what the attacker's namespace sent, OutBytes what it got
	// back (UDP payload for UDP attacks: link bytes less 42 per packet),
	// and Amplification OutBytes/InBytes; OutPPS is packets/s it got.
	InBytes       int64   `json:"attacker_bytes_in"`
	OutBytes      int64   `json:"server_bytes_out"`
	Amplification float64 `json:"amplification"`
	OutPPS        float64 `json:"server_pps_out"`
	// AnswerRatio is the mean answer size over the mean request size:
	// what each answered request reflects, however many were dropped.
	AnswerRatio float64 `json:"answer_ratio"`
	// VictimBytes is what the victim of a CheckVictim attack received and
	// VictimAmplification that over InBytes.
	VictimBytes         int64   `json:"victim_bytes,omitempty"`
	VictimAmplification float64 `json:"victim_amplification,omitempty"`
	// Ops are the legitimate operations' outcomes.
	Ops map[Op]OpResult `json:"legit"`
	// CPU is each server's CPU over the attack (1 = one core busy), RSS
	// its peak resident memory in bytes, FDs its open files at the end.
	RendezvousCPU float64 `json:"rendezvous_cpu"`
	RelayCPU      float64 `json:"relay_cpu"`
	RendezvousRSS int64   `json:"rendezvous_rss_bytes"`
	RelayRSS      int64   `json:"relay_rss_bytes"`
	// RendezvousGrowth and RelayGrowth are peak RSS less RSS at the start.
	RendezvousGrowth int64 `json:"rendezvous_growth_bytes"`
	RelayGrowth      int64 `json:"relay_growth_bytes"`
	RendezvousFDs    int   `json:"rendezvous_fds"`
	RelayFDs         int   `json:"relay_fds"`
	// Internal counts, per internal destination (loopback, private,
	// metadata, own-address), the datagrams a relay delivered there.
	Internal map[string]int64 `json:"internal_reached,omitempty"`
	// Victims are the spoofed peers' own operations during a
	// CheckSpoofedPeer attack (VictimOps).
	Victims map[Op]OpResult `json:"spoofed_peers,omitempty"`
	// KernelDrops are the datagrams the server host's kernel dropped
	// because a server socket's receive buffer was full (the server did
	// not read fast enough): legitimate ones are among them.
	KernelDrops int64 `json:"kernel_drops"`
	// Refusals are the servers' refusal counters that grew during the
	// attack (name{labels} +count, largest first).
	Refusals []string `json:"server_refusals,omitempty"`
	// Failures are the thresholds this attack broke; Err why it could not
	// be measured.
	Failures []string `json:"failures,omitempty"`
	Err      string   `json:"error,omitempty"`
}

// Pass reports whether the attack was measured and held every threshold.
func (r Result) Pass() bool { return r.Err == "" && len(r.Failures) == 0 }

// Report is a whole run.
type Report struct {
	Started    time.Time     `json:"started"`
	Rate       string        `json:"rate"`
	Duration   time.Duration `json:"duration_ns"`
	LegitRate  float64       `json:"legit_rate"`
	CPUs       int           `json:"cpus"`
	Thresholds Thresholds    `json:"thresholds"`
	Results    []Result      `json:"results"`
}

// Failed lists "attack: failure" for every broken threshold or error.
func (r *Report) Failed() []string {
	var out []string
	for _, res := range r.Results {
		if res.Err != "" {
			out = append(out, res.Attack+": "+res.Err)
		}
		for _, f := range res.Failures {
			out = append(out, res.Attack+": "+f)
		}
	}
	return out
}

// Run builds the lab, runs the selected attacks one after another (fresh
// servers for each) and removes the lab.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	attacks, _ := Select(cfg.Attacks)
	raiseNoFile()
	lab, err := NewLab(ctx, cfg.Prefix)
	if err != nil {
		return nil, err
	}
	defer lab.Close()
	work, err := os.MkdirTemp("", "keymesh-attack-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	rep := &Report{Started: time.Now().UTC(), Rate: cfg.Rate.String(), Duration: cfg.Duration,
		LegitRate: cfg.LegitRate, CPUs: runtime.NumCPU(), Thresholds: cfg.Thresholds}
	for i, a := range attacks {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		if cfg.OnStart != nil {
			cfg.OnStart(a.Name)
		}
		res := runOne(ctx, lab, &cfg, a, filepath.Join(work, fmt.Sprintf("%02d-%s", i, a.Name)))
		judge(&res, cfg.Thresholds)
		rep.Results = append(rep.Results, res)
		if cfg.OnDone != nil {
			cfg.OnDone(res)
		}
	}
	return rep, nil
}

// runOne starts fresh servers and a population, runs the attack and the
// legitimate load side by side for cfg.Duration, and measures.
func runOne(ctx context.Context, lab *Lab, cfg *Config, a Attack, work string) Result {
	res := Result{Attack: a.Name, Summary: a.Summary, Check: a.Check, Spoofed: a.Spoofed}
	fail := func(err error) Result { res.Err = err.Error(); return res }
	srv, err := startServers(ctx, lab, serverConfig{bins: cfg.Bins, work: work, joinToken: cfg.JoinToken,
		rendezvousArgs: cfg.RendezvousArgs, relArgs: cfg.RelayArgs})
	if err != nil {
		return fail(err)
	}
	defer srv.stop()
	pop, err := newPopulation(ctx, lab, srv, cfg.Peers)
	if err != nil {
		return fail(err)
	}
	defer pop.close()
	e := &env{lab: lab, bins: cfg.Bins, work: work, srv: srv, pop: pop, rate: cfg.Rate, workers: cfg.Workers, maxHeld: cfg.MaxHeld, legitRate: cfg.LegitRate}
	if a.Spoofed {
		if e.raw, err = newRawSender(lab.Bad); err != nil {
			return fail(err)
		}
		defer e.raw.close()
	}
	if a.Check == CheckInternal {
		if e.sinks, err = openSinks(lab); err != nil {
			return fail(err)
		}
		defer func() {
			for _, s := range e.sinks {
				s.conn.Close()
			}
		}()
	}
	defer func() {
		for _, f := range e.release {
			f()
		}
	}()

	link0, err := stats(lab.Bad)
	if err != nil {
		return fail(err)
	}
	rz0, err1 := sampleProc(srv.rz.pid())
	rl0, err2 := sampleProc(srv.relay.pid())
	if err := errors.Join(err1, err2); err != nil {
		return fail(err)
	}
	drops0, _ := udpRcvbufErrors(lab.Srv)
	m0 := []counters{scrape(ctx, lab, rzAdminPort), scrape(ctx, lab, relayAdminPort)}
	actx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var attackErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		attackErr = a.run(actx, e)
	}()
	var ops map[Op]OpResult
	go func() {
		defer wg.Done()
		ops = pop.drive(actx, cfg.LegitRate)
	}()
	// Sample the servers' memory while the attack runs.
	peak := map[int]int64{}
	var rz1, rl1 procSample
	var link1 linkStats
	tick := time.NewTicker(200 * time.Millisecond)
	for sampling := true; sampling; {
		select {
		case <-actx.Done():
			sampling = false
		case <-tick.C:
		}
		for _, p := range []*proc{srv.rz, srv.relay} {
			if s, err := sampleProc(p.pid()); err == nil {
				peak[p.pid()] = max(peak[p.pid()], s.rss)
			}
		}
	}
	tick.Stop()
	elapsed := time.Since(start)
	// What the servers still send in the next moment belongs to the attack.
	time.Sleep(200 * time.Millisecond)
	link1, err = stats(lab.Bad)
	if err != nil {
		return fail(err)
	}
	if d1, err := udpRcvbufErrors(lab.Srv); err == nil {
		res.KernelDrops = int64(d1 - drops0)
	}
	rz1, err1 = sampleProc(srv.rz.pid())
	rl1, err2 = sampleProc(srv.relay.pid())
	wg.Wait()
	for i, port := range []int{rzAdminPort, relayAdminPort} {
		res.Refusals = append(res.Refusals, delta(m0[i], scrape(ctx, lab, port))...)
	}
	if aerr := srv.alive(); aerr != nil {
		return fail(aerr)
	}
	if err := errors.Join(err1, err2); err != nil {
		return fail(err)
	}
	if attackErr != nil {
		return fail(fmt.Errorf("attack: %w", attackErr))
	}
	res.Duration = elapsed
	res.Ops = ops
	res.SentPackets, res.SentBytes = e.sent.packets.Load(), e.sent.bytes.Load()
	res.Held = e.held.Load()
	res.Victims = e.victimOps
	res.AchievedPPS = float64(res.SentPackets) / elapsed.Seconds()
	res.AchievedBits = float64(res.SentBytes) * 8 / elapsed.Seconds()
	inB, inP := int64(link1.txBytes-link0.txBytes), int64(link1.txPackets-link0.txPackets)
	outB, outP := int64(link1.rxBytes-link0.rxBytes), int64(link1.rxPackets-link0.rxPackets)
	if a.Check == CheckAmplification || a.Check == CheckTURNAuth || a.Check == CheckReflectRate || a.Check == CheckChallengeRate {
		// UDP payload: less Ethernet, IPv4 and UDP headers.
		inB, outB = max(0, inB-42*inP), max(0, outB-42*outP)
	}
	if res.SentPackets == 0 {
		res.AchievedBits = float64(inB) * 8 / elapsed.Seconds()
		res.AchievedPPS = float64(inP) / elapsed.Seconds()
	}
	res.InBytes, res.OutBytes = inB, outB
	if inB > 0 {
		res.Amplification = float64(outB) / float64(inB)
	}
	res.OutPPS = float64(outP) / elapsed.Seconds()
	if a.Check == CheckVictim || a.Check == CheckVictimAmplification {
		// The victim's count is UDP payload; the attacker's, link bytes
		// less 42 per packet (its TCP-free traffic is all UDP here).
		res.VictimBytes = e.victimBytes.Load()
		if p := max(0, inB-42*inP); p > 0 {
			res.VictimAmplification = float64(res.VictimBytes) / float64(p)
		}
	}
	if inP > 0 && outP > 0 && inB > 0 {
		res.AnswerRatio = (float64(outB) / float64(outP)) / (float64(inB) / float64(inP))
	}
	if a.Check == CheckInternal {
		res.Internal = map[string]int64{}
		for _, s := range e.sinks {
			res.Internal[s.name] = s.got.Load()
		}
	}
	res.RendezvousCPU = (rz1.cpu - rz0.cpu).Seconds() / elapsed.Seconds()
	res.RelayCPU = (rl1.cpu - rl0.cpu).Seconds() / elapsed.Seconds()
	res.RendezvousRSS = max(peak[srv.rz.pid()], rz1.rss)
	res.RelayRSS = max(peak[srv.relay.pid()], rl1.rss)
	res.RendezvousFDs, res.RelayFDs = rz1.fds, rl1.fds
	res.RendezvousGrowth = max(0, res.RendezvousRSS-rz0.rss)
	res.RelayGrowth = max(0, res.RelayRSS-rl0.rss)
	return res
}

// raiseNoFile lifts the open-file soft limit to the hard one (the holding
// attacks and the population open many sockets).
func raiseNoFile() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}
