package mesh

import (
	"net/netip"
	"sync"
)

// windowBits is how far behind the newest sequence number a message may
// arrive (reordered) and still be accepted once: a sender's goroutines take
// numbers before they write, so under load a message can fall behind a few
// thousand others (8192 is 40 ms at 200,000 messages a second).
const windowBits = 8192

// DefaultMaxSenders bounds the replay table: sending processes remembered
// at once. A deployment has a few dozen instances; a sender that restarts
// takes a new slot.
const DefaultMaxSenders = 1024

// replayTable is a sliding-window replay filter per sender (as in RFC 6479
// and WireGuard): each sender's newest sequence number and a bitmap of the
// windowBits numbers before it. Only authenticated messages reach it, so
// strangers cannot fill it. When full, the sender seen longest ago is
// forgotten.
type replayTable struct {
	mu      sync.Mutex
	max     int
	tick    uint64
	senders map[uint64]*window
}

type window struct {
	top  uint64         // newest accepted sequence number
	seen uint64         // table tick of the last accepted message
	from netip.AddrPort // where the last accepted message came from
	bits [windowBits / 64]uint64
}

func newReplayTable(max int) *replayTable {
	if max <= 0 {
		max = DefaultMaxSenders
	}
	return &replayTable{max: max, senders: make(map[uint64]*window)}
}

// known reports whether sender's last accepted message came from from.
func (r *replayTable) known(sender uint64, from netip.AddrPort) bool {
	r.mu.Lock()
	w := r.senders[sender]
	ok := w != nil && w.from == from
	r.mu.Unlock()
	return ok
}

// accept reports whether (sender, seq) is new, and records it and from,
// the source it came from.
func (r *replayTable) accept(sender, seq uint64, from netip.AddrPort) bool {
	if seq == 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tick++
	w := r.senders[sender]
	if w == nil {
		if len(r.senders) >= r.max {
			r.evict()
		}
		w = &window{}
		r.senders[sender] = w
	}
	if !w.accept(seq) {
		return false
	}
	w.seen = r.tick
	w.from = from
	return true
}

func (r *replayTable) evict() {
	var (
		oldest uint64
		at     = ^uint64(0)
	)
	for s, w := range r.senders {
		if w.seen < at {
			oldest, at = s, w.seen
		}
	}
	delete(r.senders, oldest)
}

func (w *window) accept(seq uint64) bool {
	if seq > w.top {
		if d := seq - w.top; d >= windowBits {
			w.bits = [windowBits / 64]uint64{}
		} else {
			for s := w.top + 1; s < seq; s++ {
				w.clear(s)
			}
		}
		w.top = seq
		w.set(seq)
		return true
	}
	if w.top-seq >= windowBits || w.has(seq) {
		return false
	}
	w.set(seq)
	return true
}

func (w *window) set(s uint64)      { w.bits[(s/64)%(windowBits/64)] |= 1 << (s % 64) }
func (w *window) clear(s uint64)    { w.bits[(s/64)%(windowBits/64)] &^= 1 << (s % 64) }
func (w *window) has(s uint64) bool { return w.bits[(s/64)%(windowBits/64)]&(1<<(s%64)) != 0 }
