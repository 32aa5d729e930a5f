package turnrelay

import "sync"

// quota counts live allocations per REST user across all of the server's
// sockets. A limit below one means no limit.
//
// pion/turn offers two hooks, and quota uses both: its QuotaHandler runs
// before an allocation is made and answers the client 486 (Allocation Quota
// Reached), but it only looks; the relay address generator runs when the
// allocation is really made, and there quota reserves the slot under a lock,
// so two Allocate requests racing on different sockets cannot both take the
// last slot (the loser gets 508 Insufficient Capacity). The slot is freed by
// the OnAllocationDeleted event.
type quota struct {
	limit int

	mu   sync.Mutex
	live map[string]int
}

func newQuota(limit int) *quota {
	return &quota{limit: limit, live: make(map[string]int)}
}

// full reports whether user already holds its maximum.
func (q *quota) full(user string) bool {
	if q.limit < 1 {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.live[user] >= q.limit
}

// acquire takes one slot for user, reporting false when none is left.
func (q *quota) acquire(user string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.limit >= 1 && q.live[user] >= q.limit {
		return false
	}
	q.live[user]++
	return true
}

// release frees one of user's slots.
func (q *quota) release(user string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch n := q.live[user]; {
	case n > 1:
		q.live[user] = n - 1
	case n == 1:
		delete(q.live, user)
	}
}

// count returns user's live allocations.
func (q *quota) count(user string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.live[user]
}
