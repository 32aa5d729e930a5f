package faults

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/loadtest/labrun"
)

// Options configure a run.
type Options struct {
	// Rate is the stream's pace in bytes per second (default 4 MiB/s);
	// Size its length in bytes (default 40 MiB). The stream must outlast
	// the fault and the recovery: Size/Rate should exceed At plus Hold
	// plus a few seconds.
	Rate, Size int64
	// At is when, into the stream, the fault is injected (default 2 s).
	At time.Duration
	// Hold is how long a cut (direct-cut, udp-block; the latter at least
	// MinUDPBlockHold) lasts before it is
	// lifted (default 3 s).
	Hold time.Duration
	// Settle is how long after the stream's end the run still waits for
	// the best path to come back (default 10 s).
	Settle time.Duration
	// Poll is the interval at which A's status is read for its path
	// (default 50 ms).
	Poll time.Duration
	// Idle is how long the stream pauses in a nat-idle run (default 12 s,
	// beyond the 10 s mapping timeout it sets).
	Idle time.Duration
	// Name prefixes the run's sites and processes (default "f").
	Name string
}

func (o *Options) defaults() {
	if o.Rate <= 0 {
		o.Rate = 4 << 20
	}
	if o.Size <= 0 {
		o.Size = 40 << 20
	}
	if o.At <= 0 {
		o.At = 2 * time.Second
	}
	if o.Hold <= 0 {
		o.Hold = 3 * time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 10 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 50 * time.Millisecond
	}
	if o.Idle <= 0 {
		o.Idle = 12 * time.Second
	}
	if o.Name == "" {
		o.Name = "f"
	}
}

// Result is what one run of one fault measured. Durations are counted
// from the fault (for a cut: from the moment it was lifted, for BestBack).
type Result struct {
	Fault string `json:"fault"`
	Run   int    `json:"run"`
	// Best is A's path to B just before the fault; Final its path at the
	// end of the run.
	Best  string `json:"best_path"`
	Final string `json:"final_path"`
	// Sent and Received are the stream's bytes at both ends; Intact that
	// all arrived with the same SHA-256.
	Sent     int64 `json:"sent"`
	Received int64 `json:"received"`
	Intact   bool  `json:"intact"`
	// Stall is the longest gap in delivered bytes after the fault;
	// DataBack the time from the fault to the end of that gap.
	Stall    time.Duration `json:"stall_ns"`
	DataBack time.Duration `json:"data_back_ns"`
	// Lifted, for a cut, is the time from the fault until it was lifted:
	// a DataBack shorter than that came back while the cut held (for
	// udp-block: through the TCP stream relay).
	Lifted *time.Duration `json:"lifted_ns,omitempty"`
	// BestBack is the time from the fault (or the end of the cut) until
	// the best path carries data again for good; nil when it never did.
	BestBack *time.Duration `json:"best_back_ns,omitempty"`
	// NewSession, for a server restart, is the time from the server being
	// ready again until a third peer, registered before, got a reply
	// from B over a new session; nil when not measured or never.
	NewSession *time.Duration `json:"new_session_ns,omitempty"`
	// Gaps are the gaps in delivery longer than 250 ms: when each ended,
	// in ms from the fault, and how long it was.
	Gaps []string `json:"gaps,omitempty"`
	// Paths are the changes of A's path to B, in ms from the fault.
	Paths []string `json:"paths,omitempty"`
	// Err says why the run could not complete.
	Err string `json:"error,omitempty"`
}

// Run runs fault f once: fresh sites and daemons, a paced stream from A to
// B over a path that is known first, the fault at Options.At, and the
// measurements. The daemons are stopped before it returns.
func Run(ctx context.Context, lab *labrun.Lab, f Fault, run int, o Options) Result {
	o.defaults()
	res := Result{Fault: f.String(), Run: run}
	if err := runOnce(ctx, lab, f, o, &res); err != nil {
		res.Err = err.Error()
	}
	return res
}

func runOnce(ctx context.Context, lab *labrun.Lab, f Fault, o Options, res *Result) error {
	ta, tb := f.sites()
	sa, err := lab.AddSite(ctx, o.Name+"a", ta)
	if err != nil {
		return err
	}
	sb, err := lab.AddSite(ctx, o.Name+"b", tb)
	if err != nil {
		return err
	}
	var sr *natlab.Site // where A roams to
	if f.Kind == Roam {
		if sr, err = lab.AddSite(ctx, o.Name+"r", natlab.PortRestricted); err != nil {
			return err
		}
	}
	if f.Kind == NATIdle {
		for _, n := range []*natlab.NAT{sa.NAT, sa.HomeNAT, sb.NAT, sb.HomeNAT} {
			if err := shortUDPTimeout(ctx, n); err != nil {
				return err
			}
		}
	}
	if f.Regions() {
		for _, st := range []*natlab.Site{sa, sb} {
			if err := lab.Home(ctx, st, 1); err != nil {
				return err
			}
		}
		if name := killed(f); name != "" {
			defer func() {
				// Bring the instance back for the next run.
				if err := lab.StartInstance(ctx, name); err == nil {
					_ = lab.WaitHealthy(ctx, 15*time.Second)
				}
			}()
		}
	}
	relayOnly := f.Kind == RelayRestart || f.Kind == RelayGone
	cfg := labrun.PeerConfig{NoDirect: relayOnly}
	ka, err := lab.NewKey(o.Name + "-a")
	if err != nil {
		return err
	}
	kc, err := lab.NewKey(o.Name + "-c")
	if err != nil {
		return err
	}
	cb := cfg
	cb.Name, cb.Allow = o.Name+"-b", []string{ka.ID, kc.ID}
	b, err := lab.StartPeer(ctx, sb.Host(), cb)
	if err != nil {
		return err
	}
	defer b.Stop()
	ca := cfg
	ca.Name, ca.Key = o.Name+"-a", ka
	a, err := lab.StartPeer(ctx, sa.Host(), ca)
	if err != nil {
		return err
	}
	defer a.Stop()
	peers := []*labrun.Peer{a, b}
	var c *labrun.Peer
	if f.newSession() {
		sc, err := lab.AddSite(ctx, o.Name+"c", natlab.PortRestricted)
		if err != nil {
			return err
		}
		if f.Regions() {
			if err := lab.Home(ctx, sc, 1); err != nil {
				return err
			}
		}
		if c, err = lab.StartPeer(ctx, sc.Host(), labrun.PeerConfig{Name: o.Name + "-c", Key: kc}); err != nil {
			return err
		}
		defer c.Stop()
		peers = append(peers, c)
	}
	for _, p := range peers {
		if _, err := p.WaitRegistered(ctx, 20*time.Second); err != nil {
			return err
		}
	}
	want := "direct"
	if relayOnly {
		want = "relay"
	}
	if err := waitPath(ctx, a, b, want, 20*time.Second); err != nil {
		return err
	}
	res.Best = want

	// The stream, and the fault a set way into it.
	src := labrun.NewSource(o.Size, o.Rate, uint64(time.Now().UnixNano()))
	var (
		faultMu       sync.Mutex
		faultAt, ref  time.Time
		faultErr      error
		injected      = make(chan struct{})
		newSession    *time.Duration
		newSessionErr error
	)
	src.At(int64(o.At.Seconds()*float64(o.Rate)), func() {
		defer close(injected)
		at, r, rdy, err := inject(ctx, lab, f, sa, sb, sr, src, o)
		faultMu.Lock()
		faultAt, ref, faultErr = at, r, err
		faultMu.Unlock()
		if err == nil && c != nil {
			d, err := newSessionTime(ctx, c, b, rdy, 30*time.Second)
			faultMu.Lock()
			newSession, newSessionErr = d, err
			faultMu.Unlock()
		}
	})

	// A's path, from now until the end.
	wctx, stopWatch := context.WithCancel(ctx)
	var samples []sample
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		samples = watchPath(wctx, a, b, o.Poll)
	}()

	rec := newRecorder(time.Now)
	timeout := time.Duration(float64(o.Size)/float64(o.Rate)*float64(time.Second)) + o.Hold + 90*time.Second
	terr := transfer(ctx, a, b, src, rec, timeout)
	select {
	case <-injected:
	case <-ctx.Done():
		stopWatch()
		<-watched
		return ctx.Err()
	}
	// Wait for the best path a while longer if it is not back yet.
	deadline := time.Now().Add(o.Settle)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if p, err := pathOf(ctx, a, b); err == nil && p == want {
			break
		}
		time.Sleep(o.Poll)
	}
	time.Sleep(2 * o.Poll)
	stopWatch()
	<-watched

	faultMu.Lock()
	defer faultMu.Unlock()
	if faultErr != nil {
		return fmt.Errorf("inject %s: %w", f, faultErr)
	}
	n, sum, times := rec.result()
	if f.Kind == NATIdle {
		// The pause is no stall: gaps count from the resumption.
		times = slices.DeleteFunc(times, func(t time.Time) bool { return !t.After(faultAt) })
	}
	res.Sent, res.Received = src.Sent(), n
	res.Intact = terr == nil && res.Sent == o.Size && n == res.Sent && sum == src.Sum()
	// Data is back at the end of the longest stall, when the stream
	// stopped at all.
	flowing := faultAt
	if gap, end, ok := longestGap(times, faultAt); ok {
		res.Stall = gap
		if gap > stallThreshold {
			flowing = end
		}
	}
	res.DataBack = flowing.Sub(faultAt)
	if f.Kind == DirectCut || f.Kind == UDPBlock {
		lifted := ref.Sub(faultAt)
		res.Lifted = &lifted
	}
	prev := faultAt
	for _, t := range times {
		if t.After(faultAt) && t.Sub(prev) > stallThreshold {
			res.Gaps = append(res.Gaps, fmt.Sprintf("%+dms: %dms", t.Sub(faultAt).Milliseconds(), t.Sub(prev).Milliseconds()))
		}
		if t.After(prev) {
			prev = t
		}
	}
	if len(samples) > 0 {
		res.Final = samples[len(samples)-1].path
	}
	for _, s := range changes(samples) {
		res.Paths = append(res.Paths, fmt.Sprintf("%+dms %s", s.at.Sub(faultAt).Milliseconds(), s.path))
	}
	if since, ok := stableSince(samples, want); ok {
		// The best path must carry data too: not before the data flows.
		back := max(since.Sub(ref), flowing.Sub(ref), 0)
		res.BestBack = &back
	}
	res.NewSession = newSession
	var errs []error
	if terr != nil {
		errs = append(errs, terr)
	}
	if newSessionErr != nil {
		errs = append(errs, newSessionErr)
	}
	return errors.Join(errs...)
}

// inject injects fault f and returns when it struck, the reference time
// for the best path's return (when a cut was lifted; else the fault), and
// when a restarted server was ready again.
func inject(ctx context.Context, lab *labrun.Lab, f Fault, sa, sb, sr *natlab.Site, src *labrun.Source, o Options) (at, ref, ready time.Time, err error) {
	hold := o.Hold
	if f.Kind == UDPBlock {
		hold = max(hold, MinUDPBlockHold)
	}
	switch f.Kind {
	case Roam:
		if err := lab.Net.MoveTo(ctx, sa.Host(), sr); err != nil {
			return at, ref, ready, err
		}
		at = time.Now()
		return at, at, time.Time{}, nil
	case NATIdle:
		src.Pause(o.Idle)
		select {
		case <-time.After(o.Idle):
		case <-ctx.Done():
		}
		at = time.Now()
		return at, at, time.Time{}, ctx.Err()
	case DirectCut, UDPBlock:
		others := []netip.Addr{sb.PublicAddr}
		if f.Kind == UDPBlock {
			others = append(others, lab.Server.Addrs...)
		}
		var restores []func() error
		lift := func() error {
			var errs []error
			for _, r := range restores {
				errs = append(errs, r())
			}
			return errors.Join(errs...)
		}
		for _, o := range others {
			r, err := lab.Net.CutUDP(ctx, sa.PublicAddr, o)
			if err != nil {
				return at, ref, ready, errors.Join(err, lift())
			}
			restores = append(restores, r)
		}
		at = time.Now()
		select {
		case <-time.After(hold):
		case <-ctx.Done():
		}
		// The cut counts as lifted when its first rule goes: data
		// between the sites may flow from then on.
		ref = time.Now()
		err = lift()
		return at, ref, time.Time{}, err
	case RelayRestart:
		at = time.Now()
		err = lab.RestartRelay(ctx, true, 500*time.Millisecond)
		return at, at, time.Now(), err
	case RendezvousRestart:
		at = time.Now()
		err = lab.RestartRendezvous(ctx, true, 500*time.Millisecond)
		return at, at, time.Now(), err
	case RendezvousKill, RelayGone:
		at = time.Now()
		err = lab.KillInstance(killed(f))
		return at, at, at, err
	case RedisRestart:
		at = time.Now()
		err = lab.RestartRedis(ctx, 500*time.Millisecond)
		return at, at, time.Now(), err
	case NATFlush:
		for _, n := range []*natlab.NAT{sa.NAT, sa.HomeNAT} {
			if n == nil {
				continue
			}
			if out, err := n.Command(ctx, "conntrack", "-F").CombinedOutput(); err != nil {
				return at, ref, ready, fmt.Errorf("conntrack -F in %s's NAT (needs the Debian package conntrack): %w: %s", sa.Name, err, out)
			}
		}
		at = time.Now()
		return at, at, time.Time{}, nil
	case Move:
		h := sa.Host()
		next := h.NextLANAddr()
		if err := h.SetAddr(ctx, next); err != nil {
			return at, ref, ready, err
		}
		at = time.Now()
		return at, at, time.Time{}, nil
	}
	return at, ref, ready, fmt.Errorf("fault %q: not injectable", f)
}

// killed names the instance fault f kills ("" for none).
func killed(f Fault) string {
	switch f.Kind {
	case RendezvousKill:
		return "r1-" + labrun.RoleRendezvous
	case RelayGone:
		return "r1-" + labrun.RoleRelay
	}
	return ""
}

// udpTimeout is the UDP mapping timeout nat-idle gives the NATs.
const udpTimeout = "10"

// shortUDPTimeout sets n's conntrack UDP timeouts (both, the one for
// flows seen both ways too) to udpTimeout seconds; nil n is no NAT.
func shortUDPTimeout(ctx context.Context, n *natlab.NAT) error {
	if n == nil {
		return nil
	}
	for _, k := range []string{"net.netfilter.nf_conntrack_udp_timeout", "net.netfilter.nf_conntrack_udp_timeout_stream"} {
		if out, err := n.Command(ctx, "sysctl", "-w", k+"="+udpTimeout).CombinedOutput(); err != nil {
			return fmt.Errorf("sysctl %s in a NAT: %w: %s", k, err, out)
		}
	}
	return nil
}

// transfer pipes src from a to b, b's output going to rec, and returns
// when both commands have ended.
func transfer(ctx context.Context, a, b *labrun.Peer, src *labrun.Source, rec *recorder, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ln, err := b.Listen(ctx, rec)
	if err != nil {
		return err
	}
	pipe, err := a.Pipe(ctx, b.ID, src, nil)
	if err != nil {
		ln.Stop()
		return err
	}
	var errs []error
	if err := pipe.Wait(); err != nil {
		errs = append(errs, fmt.Errorf("peer pipe: %w\n%s", err, pipe.Tail(10)))
	}
	select {
	case <-ln.Done():
	case <-time.After(10 * time.Second):
		ln.Stop()
	}
	if err := ln.Err(); err != nil {
		errs = append(errs, fmt.Errorf("peer listen: %w\n%s", err, ln.Tail(10)))
	}
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("transfer: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

// pathOf returns the path a's status shows to b ("" when none).
func pathOf(ctx context.Context, a, b *labrun.Peer) (string, error) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ps, ok, err := a.PeerStatus(sctx, b.ID)
	if err != nil || !ok {
		return "", err
	}
	return ps.Path, nil
}

// waitPath pings from a to b until a reply comes over path.
func waitPath(ctx context.Context, a, b *labrun.Peer, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	found := false
	_, err := a.Ping(ctx, b.ID, labrun.PingOptions{Interval: 100 * time.Millisecond, Timeout: 5 * time.Second}, func(r labrun.PingReply) bool {
		if r.OK() && r.Path == path {
			found = true
			return false
		}
		return true
	})
	if !found {
		return fmt.Errorf("no reply over %s from B within %s (%v)", path, timeout, err)
	}
	return nil
}

// watchPath samples a's path to b every poll until ctx ends.
func watchPath(ctx context.Context, a, b *labrun.Peer, poll time.Duration) []sample {
	var out []sample
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		p, err := pathOf(ctx, a, b)
		if ctx.Err() != nil {
			return out
		}
		if err == nil {
			out = append(out, sample{at: time.Now(), path: p})
		}
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
	}
}

// newSessionTime has c ping b (one ping, new session each time: the
// daemons have not met before) until a reply comes, and returns the time
// from ready until then.
func newSessionTime(ctx context.Context, c, b *labrun.Peer, ready time.Time, limit time.Duration) (*time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for ctx.Err() == nil {
		ok := false
		_, _ = c.Ping(ctx, b.ID, labrun.PingOptions{Count: 1, Timeout: time.Second}, func(r labrun.PingReply) bool {
			ok = r.OK()
			return false
		})
		if ok {
			d := time.Since(ready)
			return &d, nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("no new session from C to B within %s of the restart", limit)
}
