package labrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
)

// RegionKillConfig configures Lab.RegionKill. Zero fields take the
// defaults given.
type RegionKillConfig struct {
	// AType and BType are the NAT types of A's site (nearest region 1) and
	// B's (nearest region 2); default port-restricted.
	AType, BType natlab.NATType
	// Kill is the region whose instances are killed (default "r2", B's).
	Kill string
	// Rate is the stream's pace in bytes per second (default 64 KiB/s);
	// Duration its planned length at that pace (default 20 s); KillAfter
	// when the region dies, into the stream (default 5 s).
	Rate      int64
	Duration  time.Duration
	KillAfter time.Duration
	// Direct lets the peers use a direct path; by default they use only the
	// relay (--no-direct), whose instances live in the regions.
	Direct bool
	// Timeout bounds the whole stream (default Duration + 30 s).
	Timeout time.Duration
}

func (c *RegionKillConfig) defaults() {
	if c.AType == "" {
		c.AType = natlab.PortRestricted
	}
	if c.BType == "" {
		c.BType = natlab.PortRestricted
	}
	if c.Kill == "" {
		c.Kill = "r2"
	}
	if c.Rate <= 0 {
		c.Rate = 64 << 10
	}
	if c.Duration <= 0 {
		c.Duration = 20 * time.Second
	}
	if c.KillAfter <= 0 {
		c.KillAfter = 5 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = c.Duration + 30*time.Second
	}
}

// RegionKillResult is what Lab.RegionKill measured.
type RegionKillResult struct {
	Transfer TransferResult
	// Killed is when the region's instances were killed, from the start of
	// the stream; MarkedDown how long after the kill the health checker
	// moved the region's clients (zero: it did not).
	Killed, MarkedDown time.Duration
	// LongestGap is the longest time without a byte arriving at B, and
	// GapStart when it began (from the start of the stream).
	LongestGap, GapStart time.Duration
	// KillGap is the longest gap that ended after the kill (bytes already
	// in flight may still arrive just after it), and KillGapAt when it
	// began, from the kill (negative: just before it, as the kill landed
	// between two bytes); KillGap is zero when no byte arrived after the
	// kill.
	KillGap, KillGapAt time.Duration
}

// smallReads hands out at most max bytes per Read.
type smallReads struct {
	r   io.Reader
	max int
}

func (s *smallReads) Read(p []byte) (int, error) {
	if len(p) > s.max {
		p = p[:s.max]
	}
	return s.r.Read(p)
}

// GapSink is a Sink that also records the longest time between two
// writes.
type GapSink struct {
	*Sink
	mu       sync.Mutex
	start    time.Time
	last     time.Time
	gap      time.Duration
	gapStart time.Time
	writes   []time.Time
}

// NewGapSink returns an empty GapSink; gaps count from start.
func NewGapSink(start time.Time) *GapSink {
	return &GapSink{Sink: NewSink(), start: start, last: start}
}

// Write implements io.Writer.
func (g *GapSink) Write(p []byte) (int, error) {
	now := time.Now()
	g.mu.Lock()
	if d := now.Sub(g.last); d > g.gap {
		g.gap, g.gapStart = d, g.last
	}
	g.last = now
	g.writes = append(g.writes, now)
	g.mu.Unlock()
	return g.Sink.Write(p)
}

// Longest returns the longest gap and when it began.
func (g *GapSink) Longest() (gap time.Duration, start time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gap, g.gapStart
}

// LongestAfter returns the longest gap between two writes (or the start
// and the first write) that ended after t, and when it ended (zero if no
// write came after t).
func (g *GapSink) LongestAfter(t time.Time) (gap time.Duration, end time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	prev := g.start
	for _, w := range g.writes {
		if w.After(t) && w.Sub(prev) > gap {
			gap, end = w.Sub(prev), w
		}
		prev = w
	}
	return gap, end
}

// RegionKill streams paced data from a peer in a site nearest region 1 to
// a peer in a site nearest region 2 (over the relay unless Direct), kills
// every instance of region Kill partway through, and measures the longest
// stall at B, when the front door moved the region's clients, and whether
// every byte arrived (SHA-256 at both ends). The lab needs Regions >= 2.
func (l *Lab) RegionKill(ctx context.Context, cfg RegionKillConfig) (RegionKillResult, error) {
	cfg.defaults()
	var res RegionKillResult
	if l.Anycast == nil || len(l.Anycast.Regions) < 2 {
		return res, errors.New("labrun: region kill needs a lab with 2 regions or more")
	}
	if l.Anycast.Region(cfg.Kill) == nil {
		return res, fmt.Errorf("labrun: region kill: no region %q", cfg.Kill)
	}
	sa, err := l.AddSite(ctx, "rka", cfg.AType)
	if err != nil {
		return res, err
	}
	sb, err := l.AddSite(ctx, "rkb", cfg.BType)
	if err != nil {
		return res, err
	}
	if err := l.Home(ctx, sa, 1); err != nil {
		return res, err
	}
	if err := l.Home(ctx, sb, 2); err != nil {
		return res, err
	}
	keyA, err := l.NewKey("rk-a")
	if err != nil {
		return res, err
	}
	pb, err := l.StartPeer(ctx, sb.Host(), PeerConfig{Name: "rk-b", Allow: []string{keyA.ID}, NoDirect: !cfg.Direct})
	if err != nil {
		return res, err
	}
	defer pb.Stop()
	pa, err := l.StartPeer(ctx, sa.Host(), PeerConfig{Name: "rk-a", Key: keyA, NoDirect: !cfg.Direct})
	if err != nil {
		return res, err
	}
	defer pa.Stop()
	for _, p := range []*Peer{pa, pb} {
		if _, err := p.WaitRegistered(ctx, 15*time.Second); err != nil {
			return res, err
		}
	}

	size := cfg.Rate * int64(cfg.Duration/time.Millisecond) / 1000
	src := NewSource(size, cfg.Rate, 11)
	var killedAt time.Time
	killed := make(chan error, 1)
	src.At(cfg.Rate*int64(cfg.KillAfter/time.Millisecond)/1000, func() {
		killedAt = time.Now()
		killed <- l.KillRegion(cfg.Kill)
	})
	start := time.Now()
	sink := NewGapSink(start)
	// Small reads make the pace smooth: 20 ms of data at a time, so gaps
	// are measured to about that.
	in := &smallReads{r: src, max: int(max(cfg.Rate/50, 1))}
	tr, err := transfer(ctx, pa, pb, src, in, sink, cfg.Timeout)
	res.Transfer = tr
	var killErr error
	select {
	case killErr = <-killed:
	default:
		killErr = errors.New("the stream ended before the kill")
	}
	if err := errors.Join(err, killErr); err != nil {
		return res, err
	}
	res.Killed = killedAt.Sub(start)
	for _, e := range l.HealthEvents() {
		if e.Region == cfg.Kill && !e.Healthy && e.At.After(killedAt) {
			res.MarkedDown = e.At.Sub(killedAt)
			break
		}
	}
	gap, gapStart := sink.Longest()
	res.LongestGap, res.GapStart = gap, gapStart.Sub(start)
	if gap, end := sink.LongestAfter(killedAt); !end.IsZero() {
		res.KillGap, res.KillGapAt = gap, end.Add(-gap).Sub(killedAt)
	}
	return res, nil
}
