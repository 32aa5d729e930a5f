package overlay

import (
	"net/netip"
	"sync"
	"time"
)

// flowKey names a flow this side opened: protocol, local port, remote
// address and port. A packet coming back on it is a reply, which the
// policy does not judge again.
type flowKey struct {
	proto  uint8
	local  uint16
	remote netip.AddrPort
}

// flows is a bounded table of flows opened from this side, each kept for
// flowIdle after its last outbound packet. When full, the entries found
// idle are removed; if none is, an arbitrary one goes: the table never
// grows past max.
type flows struct {
	mu   sync.Mutex
	max  int
	idle time.Duration
	m    map[flowKey]time.Time
}

func newFlows(max int, idle time.Duration) *flows {
	return &flows{max: max, idle: idle, m: make(map[flowKey]time.Time)}
}

// out records an outbound packet of the flow k at now.
func (f *flows) out(k flowKey, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.m[k]; !ok && len(f.m) >= f.max {
		for old, t := range f.m {
			if now.Sub(t) > f.idle {
				delete(f.m, old)
			}
		}
		for old := range f.m {
			if len(f.m) < f.max {
				break
			}
			delete(f.m, old)
		}
	}
	f.m[k] = now
}

// reply reports whether k is a live flow opened from this side.
func (f *flows) reply(k flowKey, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.m[k]
	return ok && now.Sub(t) <= f.idle
}
