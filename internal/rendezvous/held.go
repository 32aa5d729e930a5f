package rendezvous

import (
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
)

// Punches held for a peer homed on another instance. A Punch for B goes
// out through B's home (mesh.go). When that instance has just died, the
// Punch is lost, and before the mesh calls the home suspect (mesh.
// SuspectAfter) this instance cannot know it: behind a front door, B is
// unreachable until its next keepalive moves its flow to a live instance
// and it registers there. The peer that asked got its ConnectReply and
// probes B, but B never heard of it, so the session waits for that peer to
// give up and connect again.
//
// So this instance keeps a copy of each Punch it handed to another home
// for heldFor, and when B registers here within that time (its home moved
// here), the copies go out with B's Registered, to the address the
// Register came from: the new flow through the front door. A copy B got
// already is the same sealed frame, dropped by B's replay cache.
//
// Limits: the copy waits at the instance that took the Connect. B finds it
// when the front door moves B to that instance (a region's flows move to
// the same next-nearest region, where the connecting peer usually is too);
// a B that lands elsewhere waits, as before, for the connecting peer to
// connect again.
//
// What a stranger can do with it: a registered peer whose Connect B's
// policy admits adds at most one copy per Punch B's rate limit allows
// (allowPunch); the table is bounded (heldMax, oldest out first) and keeps
// heldPerPeer copies per target; a copy goes only to B, sealed to B's key,
// in answer to a Register that proved its source address (cookie) and B's
// key (box).

const (
	// heldFor is how long a copy waits for its target to register here:
	// beyond a keepalive interval and its retransmissions.
	heldFor = 3 * time.Second
	// heldMax bounds the copies held (each a Punch, under 1.5 KB).
	heldMax = 1 << 12
	// heldPerPeer bounds the copies held for one target.
	heldPerPeer = 4
)

type heldPunch struct {
	seq uint64
	at  time.Time
	b   []byte
}

// heldPunches is the bounded table of held Punch copies by target.
type heldPunches struct {
	max, perPeer int
	ttl          time.Duration

	mu     sync.Mutex // guards the fields below
	byPeer map[crypto.PeerID][]heldPunch
	// ring holds one slot per copy added, oldest first once full: a full
	// table evicts the copy of the slot it reuses (when still held).
	ring []heldSlot
	next int
	seq  uint64
}

type heldSlot struct {
	id  crypto.PeerID
	seq uint64
}

func newHeldPunches(max, perPeer int, ttl time.Duration) *heldPunches {
	return &heldPunches{max: max, perPeer: perPeer, ttl: ttl, byPeer: map[crypto.PeerID][]heldPunch{}}
}

// hold keeps a copy of the sealed Punch b for target, taken at now.
func (h *heldPunches) hold(target crypto.PeerID, b []byte, now time.Time) {
	if h.max <= 0 || h.perPeer <= 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	slot := heldSlot{id: target, seq: h.seq}
	if len(h.ring) < h.max {
		h.ring = append(h.ring, slot)
	} else {
		old := h.ring[h.next]
		h.dropLocked(old.id, func(p heldPunch) bool { return p.seq == old.seq })
		h.ring[h.next] = slot
		h.next = (h.next + 1) % h.max
	}
	ps := h.byPeer[target]
	// Expired copies and the oldest beyond perPeer go first.
	ps = deleteHeld(ps, func(p heldPunch) bool { return now.Sub(p.at) >= h.ttl })
	if len(ps) >= h.perPeer {
		ps = append(ps[:0], ps[len(ps)-h.perPeer+1:]...)
	}
	h.byPeer[target] = append(ps, heldPunch{seq: h.seq, at: now, b: append([]byte(nil), b...)})
}

// take returns target's copies held less than ttl at now and forgets them
// all.
func (h *heldPunches) take(target crypto.PeerID, now time.Time) [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	ps, ok := h.byPeer[target]
	if !ok {
		return nil
	}
	delete(h.byPeer, target)
	var out [][]byte
	for _, p := range ps {
		if now.Sub(p.at) < h.ttl {
			out = append(out, p.b)
		}
	}
	return out
}

// len is how many copies are held (tests).
func (h *heldPunches) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, ps := range h.byPeer {
		n += len(ps)
	}
	return n
}

// dropLocked deletes id's copies that match. h.mu is held.
func (h *heldPunches) dropLocked(id crypto.PeerID, match func(heldPunch) bool) {
	ps, ok := h.byPeer[id]
	if !ok {
		return
	}
	if ps = deleteHeld(ps, match); len(ps) == 0 {
		delete(h.byPeer, id)
	} else {
		h.byPeer[id] = ps
	}
}

func deleteHeld(ps []heldPunch, match func(heldPunch) bool) []heldPunch {
	out := ps[:0]
	for _, p := range ps {
		if !match(p) {
			out = append(out, p)
		}
	}
	return out
}
