package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/keymesh/keymesh/internal/discovery"
)

// regHealth remembers whether the registry answered its last call and logs
// each change once, so an outage of a shared store (Redis) shows as one
// clear line and its end as another, not as one warning per datagram.
type regHealth struct {
	down atomic.Bool
}

// registryCtx bounds one registry call by Config.RegistryTimeout, so that a
// store that hangs (not only one that refuses) cannot hold the readers.
// The in-process registry never blocks, so it is spared the timer and
// context a deadline costs (3 allocations per call on the hot path).
func (s *Server) registryCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.inProcess {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, s.cfg.RegistryTimeout)
}

func noCancel() {}

// registryUnreachable reports whether err means the store did not answer.
func registryUnreachable(err error) bool {
	return errors.Is(err, discovery.ErrUnavailable) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// noteRegistry records the outcome of a registry call: an unreachable store
// marks it down, any answer (a record, ErrNotFound, a bad record) up.
func (s *Server) noteRegistry(err error) {
	if err != nil && registryUnreachable(err) {
		if s.health.down.CompareAndSwap(false, true) {
			s.m.registryUp.Set(0)
			s.log.Error("registry unreachable: registrations and connects are refused until it answers again; STUN is still served",
				"instance", s.cfg.Instance, "err", err)
		}
		return
	}
	if s.health.down.Load() && s.health.down.CompareAndSwap(true, false) {
		s.m.registryUp.Set(1)
		s.log.Info("registry reachable again", "instance", s.cfg.Instance)
	}
}

// Health reports whether the registry answers (for obs.Admin's /healthz).
func (s *Server) Health(ctx context.Context) error {
	ctx, cancel := s.registryCtx(ctx)
	defer cancel()
	err := s.cfg.Registry.Ping(ctx)
	s.noteRegistry(err)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	s.refreshEpoch(ctx)
	return nil
}

// refreshEpoch reads the registry's boot epoch (discovery.Epocher) into
// s.epoch, which every sealed answer carries: a changed epoch tells a peer
// that the registry lost its record, and it registers again at once. A
// Redis that came back empty gets a new epoch here, within one
// WatchRegistry interval. A registry without an epoch, or one that does
// not answer, leaves it as it was.
func (s *Server) refreshEpoch(ctx context.Context) {
	e, ok := s.cfg.Registry.(discovery.Epocher)
	if !ok {
		return
	}
	ctx, cancel := s.registryCtx(ctx)
	defer cancel()
	v, err := e.Epoch(ctx)
	if err != nil {
		return
	}
	if old := s.epoch.Swap(v); old != v && old != 0 {
		s.log.Warn("registry epoch changed: the registry lost its records; peers register again as they hear the new epoch",
			"instance", s.cfg.Instance, "old", fmt.Sprintf("%x", old), "new", fmt.Sprintf("%x", v))
		go s.nudge(context.WithoutCancel(ctx), v)
	}
}

// WatchRegistry checks the registry every interval until ctx ends, so that
// an outage and the recovery are logged (and keymesh_rendezvous_registry_up
// follows) even while no peer sends anything.
func (s *Server) WatchRegistry(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = s.Health(ctx)
		}
	}
}
