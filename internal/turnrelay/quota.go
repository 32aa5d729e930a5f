package turnrelay

import "sync"

// quota counts live allocations per REST user, and in all, across all of
// the server's sockets. A limit below one means no limit.
//
// pion/turn offers two hooks, and quota uses both: its QuotaHandler runs
// before an allocation is made and answers the client 486 (Allocation Quota
// Reached), but it only looks; the relay address generator runs when the
// allocation is really made, and there quota reserves the slot under a lock,
// so two Allocate requests racing on different sockets cannot both take the
// last slot (the loser gets 508 Insufficient Capacity). The slot is freed by
// the OnAllocationDeleted event.
type quota struct {
	limit, total int

	mu   sync.Mutex
	live map[string]int
	all  int
}

func newQuota(limit, total int) *quota {
	return &quota{limit: limit, total: total, live: make(map[string]int)}
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

// acquire takes one slot for user: ErrQuota when the user holds its
// maximum, ErrCapacity when the server does.
func (q *quota) acquire(user string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.total >= 1 && q.all >= q.total {
		return ErrCapacity
	}
	if q.limit >= 1 && q.live[user] >= q.limit {
		return ErrQuota
	}
	q.live[user]++
	q.all++
	return nil
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
	default:
		return
	}
	q.all--
}

// count returns user's live allocations.
func (q *quota) count(user string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.live[user]
}

// countAll returns the live allocations of every user.
func (q *quota) countAll() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.all
}
