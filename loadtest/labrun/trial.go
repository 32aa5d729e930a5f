package labrun

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/loadtest/matrix"
)

// TrialOptions configure one traversal trial.
type TrialOptions struct {
	// Name prefixes the trial's process names and logs (e.g. "t7").
	Name string
	// Timeout is how long A pings B waiting for a direct path (default
	// 15 s); the trial's outcome is what was seen within it.
	Timeout time.Duration
	// RegisterTimeout bounds the daemons' registration (default 10 s): they
	// get it as --register-timeout, and the trial waits a little longer,
	// so that a daemon that gives up has said why in its log.
	RegisterTimeout time.Duration
	// Interval is the ping interval (default 50 ms): the resolution of
	// ToDirect.
	Interval time.Duration
	// PingTimeout is the wait for each reply (default 5 s).
	PingTimeout time.Duration
	// StopAt ends the trial at the first reply whose path is at least this
	// good (default matrix.Direct: wait for a direct path until Timeout).
	// matrix.Relay ends it at the first reply: enough to pass a pair
	// expected to relay, but it measures nothing about upgrades.
	StopAt matrix.Outcome
}

func (o *TrialOptions) defaults() {
	if o.Name == "" {
		o.Name = "trial"
	}
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	if o.RegisterTimeout <= 0 {
		o.RegisterTimeout = 10 * time.Second
	}
	if o.Interval <= 0 {
		o.Interval = 50 * time.Millisecond
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = 5 * time.Second
	}
	if o.StopAt == "" || o.StopAt == matrix.None {
		o.StopAt = matrix.Direct
	}
}

// reached reports whether a ping line ends a trial that stops at want.
func reached(r PingReply, want matrix.Outcome) bool {
	return r.OK() && pathOutcome(r.Path).AtLeast(want)
}

// pathOutcome maps a reply's path to an outcome.
func pathOutcome(path string) matrix.Outcome {
	switch path {
	case "direct":
		return matrix.Direct
	case "relay":
		return matrix.Relay
	}
	return matrix.None
}

// TrialResult is what one trial saw.
type TrialResult struct {
	Outcome matrix.Outcome
	// FirstByte is the time from starting `peer ping` to its first reply;
	// ToDirect until the first reply over a direct path (zero if none).
	FirstByte, ToDirect time.Duration
	// Remote is the remote address of the last reply.
	Remote string
	// Replies are every line `peer ping` printed.
	Replies []PingReply
	// Err says why the trial could not run to its end (registration
	// failed, ping failed), or nil.
	Err error
	// Procs are the trial's processes (daemons and pings), for their logs.
	Procs []*Proc
}

// Classify folds ping lines into an outcome: direct when any reply came
// over a direct path, else relay when any reply came, else none; with the
// arrival time of the first reply and of the first direct one.
func Classify(replies []PingReply) (out matrix.Outcome, firstByte, toDirect time.Duration) {
	out = matrix.None
	for _, r := range replies {
		if !r.OK() {
			continue
		}
		if firstByte == 0 {
			firstByte = r.At
		}
		if r.Path == "direct" {
			return matrix.Direct, firstByte, r.At
		}
		out = matrix.Relay
	}
	return out, firstByte, 0
}

// RunTrial runs one traversal trial: fresh daemons with fresh keys in hosts
// a and b (b allows a), both registered, then A pings B by peer ID until a
// reply comes over a direct path (or as StopAt says) or the timeout
// passes. The daemons are stopped before it returns.
func (l *Lab) RunTrial(ctx context.Context, a, b *natlab.Host, o TrialOptions) TrialResult {
	o.defaults()
	var res TrialResult
	keyA, err := l.NewKey(o.Name + "-a")
	if err != nil {
		res.Outcome, res.Err = matrix.None, err
		return res
	}
	pb, err := l.StartPeer(ctx, b, PeerConfig{Name: o.Name + "-b", Allow: []string{keyA.ID}, RegisterTimeout: o.RegisterTimeout})
	if err != nil {
		res.Outcome, res.Err = matrix.None, err
		return res
	}
	res.Procs = append(res.Procs, pb.Proc)
	defer pb.Stop()
	pa, err := l.StartPeer(ctx, a, PeerConfig{Name: o.Name + "-a", Key: keyA, RegisterTimeout: o.RegisterTimeout})
	if err != nil {
		res.Outcome, res.Err = matrix.None, err
		return res
	}
	res.Procs = append(res.Procs, pa.Proc)
	defer pa.Stop()

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, p := range []*Peer{pa, pb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = p.WaitRegistered(ctx, o.RegisterTimeout+3*time.Second)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		res.Outcome, res.Err = matrix.None, err
		return res
	}

	tctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	start := time.Now()
	var lastErr error
	for tctx.Err() == nil {
		offset := time.Since(start)
		replies, proc, err := pa.ping(tctx, pb.ID, PingOptions{Interval: o.Interval, Timeout: o.PingTimeout, UntilDirect: true}, func(r PingReply) bool {
			return !reached(r, o.StopAt)
		})
		if proc != nil {
			res.Procs = append(res.Procs, proc)
		}
		for _, r := range replies {
			r.At += offset
			res.Replies = append(res.Replies, r)
		}
		if len(res.Replies) > 0 && reached(res.Replies[len(res.Replies)-1], o.StopAt) {
			lastErr = nil
			break
		}
		// The ping ended early (a fatal error: unknown peer, refused):
		// try again while the trial lasts.
		if err != nil && tctx.Err() == nil {
			lastErr = err
		}
		select {
		case <-tctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	if ctx.Err() != nil {
		res.Err = ctx.Err()
	}
	res.Outcome, res.FirstByte, res.ToDirect = Classify(res.Replies)
	for _, r := range res.Replies {
		if r.OK() {
			res.Remote = r.Remote
		}
	}
	if res.Outcome == matrix.None && res.Err == nil {
		if lastErr == nil {
			lastErr = fmt.Errorf("no reply within %s", o.Timeout)
		}
		res.Err = lastErr
	}
	return res
}
