package rzclient

import "time"

// epochKickGap is the least time between two registrations that a changed
// epoch starts: someone who replays authentic answers of two server
// lifetimes (each only once: the replay cache) cannot make the peer
// register more often than this.
const epochKickGap = time.Second

// noteEpoch takes the registry epoch of a sealed answer (0: the server
// sends none). When it differs from the last one, the registry lost our
// record (the server restarted without a snapshot, or its Redis came back
// empty): register again at once, not at the next refresh, so that peers
// connecting to us find us. A Registered carries the epoch of the
// registration it confirms, so it only records it.
//
// Only answers sealed under the pinned server key get here: a stranger
// cannot forge an epoch change, so cannot make peers register en masse.
func (c *Client) noteEpoch(epoch uint64, registered bool) {
	if epoch == 0 {
		return
	}
	now := c.cfg.Now()
	c.mu.Lock()
	old := c.st.Epoch
	changed := old != 0 && old != epoch
	kick := changed && !registered && now.Sub(c.epochKicked) >= epochKickGap
	switch {
	case kick:
		c.epochKicked = now
		c.st.Epoch = epoch
	case !changed || registered:
		c.st.Epoch = epoch
	}
	c.mu.Unlock()
	if kick {
		c.log.Info("rendezvous registry epoch changed: registering again", "old", old, "new", epoch)
		c.Reregister()
	}
}
