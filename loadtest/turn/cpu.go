package turn

import (
	"context"
	"sync"
	"time"
)

// cpuSampler records a server's CPU time at regular instants.
type cpuSampler struct {
	read func() (time.Duration, error)

	mu      sync.Mutex
	samples []cpuSample
}

type cpuSample struct {
	at  time.Time
	cpu time.Duration
}

func newCPUSampler(read func() (time.Duration, error)) *cpuSampler {
	return &cpuSampler{read: read}
}

func (s *cpuSampler) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if c, err := s.read(); err == nil {
			s.mu.Lock()
			s.samples = append(s.samples, cpuSample{time.Now(), c})
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// between returns the CPU used from a to b, interpolating between samples.
func (s *cpuSampler) between(a, b time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cpuAt(s.samples, b) - cpuAt(s.samples, a)
}

// cpuAt interpolates the CPU time at t from samples ordered by time.
func cpuAt(samples []cpuSample, t time.Time) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	if !t.After(samples[0].at) {
		return samples[0].cpu
	}
	for i := 1; i < len(samples); i++ {
		if t.After(samples[i].at) {
			continue
		}
		a, b := samples[i-1], samples[i]
		span := b.at.Sub(a.at)
		if span <= 0 {
			return b.cpu
		}
		f := float64(t.Sub(a.at)) / float64(span)
		return a.cpu + time.Duration(f*float64(b.cpu-a.cpu))
	}
	return samples[len(samples)-1].cpu
}
