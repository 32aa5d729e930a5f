package labrun

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Faults of a lab with Regions, for `loadtest faults`: one instance killed
// while its region's other instance lives on, and the shared Redis
// restarted (without persistence: it comes back empty).

// instance returns the instance named name ("r1-rendezvous").
func (l *Lab) instance(name string) (*Instance, error) {
	for _, in := range l.Instances {
		if in.Name == name {
			return in, nil
		}
	}
	return nil, fmt.Errorf("labrun: no instance %q", name)
}

// KillInstance kills (SIGKILL) the instance named name, e.g.
// "r1-rendezvous"; its region's health then fails and the front door moves
// its flows to the next region.
func (l *Lab) KillInstance(name string) error {
	in, err := l.instance(name)
	if err != nil {
		return err
	}
	if p := in.Proc(); p != nil {
		p.Kill()
	}
	l.cfg.Logger.Info("labrun: instance killed", "name", name)
	return nil
}

// StartInstance starts the instance named name again (after KillInstance)
// with the same flags, and waits until it is ready.
func (l *Lab) StartInstance(ctx context.Context, name string) error {
	in, err := l.instance(name)
	if err != nil {
		return err
	}
	if p := in.Proc(); p != nil && p.Running() {
		return nil
	}
	return l.startInstance(ctx, in)
}

// WaitHealthy waits until every region is marked healthy at the front
// door again (after StartInstance), or timeout.
func (l *Lab) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	if l.Anycast == nil {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for _, r := range l.Anycast.Regions {
			ok = ok && l.Anycast.Healthy(r.Name)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("labrun: a region is still marked down after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// RestartRedis kills the shared Redis (SIGKILL), waits down, and starts it
// again, empty (the lab runs it without persistence): every registration
// is lost with it.
func (l *Lab) RestartRedis(ctx context.Context, down time.Duration) error {
	l.mu.Lock()
	p := l.redis
	l.mu.Unlock()
	if p == nil {
		return errors.New("labrun: RestartRedis needs a lab with Regions")
	}
	p.Kill()
	l.cfg.Logger.Info("labrun: redis killed")
	select {
	case <-time.After(down):
	case <-ctx.Done():
		return ctx.Err()
	}
	return l.runRedis(ctx)
}
