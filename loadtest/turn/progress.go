package turn

import (
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/testutil/coturn"
)

// progressLog collects the once-a-second progress lines of all uclient
// processes of a row, timestamped as they are read, into one series of the
// packets relayed for messages that made the round trip: two per message
// echoed back (client to peer, peer to client).
type progressLog struct {
	mu     sync.Mutex
	last   []int64 // per process: 2 × received so far
	total  int64
	points []progressPoint
}

type progressPoint struct {
	at    time.Time
	total int64
}

// lineFunc returns the output callback for process i.
func (l *progressLog) lineFunc(i int) func(time.Time, string) {
	return func(at time.Time, line string) {
		if p, ok := coturn.ParseProgress(line); ok {
			l.add(at, i, 2*p.Received)
		} else if _, recv, ok := coturn.ParseTotals(line); ok {
			// The last count, which may come after the last progress line.
			l.add(at, i, 2*recv)
		}
	}
}

func (l *progressLog) add(at time.Time, proc int, cum int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cum < l.last[proc] {
		return
	}
	l.total += cum - l.last[proc]
	l.last[proc] = cum
	l.points = append(l.points, progressPoint{at, l.total})
}

// steadyWindow returns the window of at least length w (and as short as
// the points allow) with the highest packet rate: the steady state once
// every session is sending, before the first ones finish.
func (l *progressLog) steadyWindow(w time.Duration) (from, to time.Time, packets int64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bestWindow(l.points, w)
}

func bestWindow(pts []progressPoint, w time.Duration) (from, to time.Time, packets int64, ok bool) {
	best := -1.0
	b := 0
	for a := range pts {
		for b < len(pts) && pts[b].at.Sub(pts[a].at) < w {
			b++
		}
		if b == len(pts) {
			break
		}
		d := pts[b].at.Sub(pts[a].at)
		rate := float64(pts[b].total-pts[a].total) / d.Seconds()
		if rate > best {
			best, from, to, packets, ok = rate, pts[a].at, pts[b].at, pts[b].total-pts[a].total, true
		}
	}
	return from, to, packets, ok
}
