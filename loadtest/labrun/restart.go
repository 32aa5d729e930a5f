package labrun

import (
	"context"
	"time"
)

// RestartRendezvous stops the rendezvous (SIGKILL when kill is true, as a
// crash would; else SIGTERM), waits down for the given time, and starts it
// again with the same flags and key (same address, same server ID), so the
// peers' connect string stays valid. Its memory registry comes back from
// the snapshot the rendezvous saves every second (--registry-snapshot):
// records younger than that are lost, and with them the peers' epoch.
func (l *Lab) RestartRendezvous(ctx context.Context, kill bool, down time.Duration) error {
	var p *Proc
	for _, q := range l.Procs() {
		if q.Name == "rendezvous" && q.Running() {
			p = q
		}
	}
	if p != nil {
		if kill {
			p.Kill()
		} else {
			p.Stop()
		}
	}
	l.cfg.Logger.Info("labrun: rendezvous stopped", "kill", kill)
	select {
	case <-time.After(down):
	case <-ctx.Done():
		return ctx.Err()
	}
	return l.startRendezvous(ctx)
}
