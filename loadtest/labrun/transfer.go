package labrun

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Source is a paced, deterministic stream of pseudo-random bytes (ChaCha8
// from a seed) that hashes what it hands out, for transfers whose both ends
// are checked by SHA-256. At marks a point in the stream: when the reader
// first passes it, the function runs (in its own goroutine, so the pacing
// goes on).
type Source struct {
	size  int64
	rate  int64 // bytes per second; 0: as fast as read
	rng   *rand.ChaCha8
	sum   hash.Hash
	start time.Time
	read  atomic.Int64
	// paused is how long Pause held the stream back, in total (ns).
	paused atomic.Int64

	mu    sync.Mutex
	marks []mark
}

type mark struct {
	at   int64
	fn   func()
	done bool
}

// NewSource returns a Source of size bytes at rate bytes per second (0: no
// pacing).
func NewSource(size, rate int64, seed uint64) *Source {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return &Source{size: size, rate: rate, rng: rand.NewChaCha8(s), sum: sha256.New()}
}

// At makes fn run once the reader has passed offset bytes.
func (s *Source) At(offset int64, fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marks = append(s.marks, mark{at: offset, fn: fn})
}

// Read implements io.Reader.
func (s *Source) Read(p []byte) (int, error) {
	n := s.read.Load()
	if n >= s.size {
		return 0, io.EOF
	}
	if s.start.IsZero() {
		s.start = time.Now()
	}
	if len(p) > 64<<10 {
		p = p[:64<<10]
	}
	if rem := s.size - n; int64(len(p)) > rem {
		p = p[:rem]
	}
	if s.rate > 0 {
		due := s.start.Add(time.Duration(s.paused.Load()) + time.Duration(float64(n)/float64(s.rate)*float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
	}
	_, _ = s.rng.Read(p)
	s.sum.Write(p)
	total := s.read.Add(int64(len(p)))
	s.mu.Lock()
	for i := range s.marks {
		if m := &s.marks[i]; !m.done && total >= m.at {
			m.done = true
			go m.fn()
		}
	}
	s.mu.Unlock()
	return len(p), nil
}

// Pause holds a paced stream back for d from now: it sends nothing for
// that long (an idle session), then goes on at its pace.
func (s *Source) Pause(d time.Duration) { s.paused.Add(int64(d)) }

// Sent returns how many bytes were read so far.
func (s *Source) Sent() int64 { return s.read.Load() }

// Sum returns the SHA-256 of what was read; call it after the last Read.
func (s *Source) Sum() [32]byte {
	var out [32]byte
	copy(out[:], s.sum.Sum(nil))
	return out
}

// Sink hashes and counts what is written to it.
type Sink struct {
	mu  sync.Mutex
	sum hash.Hash
	n   int64
}

// NewSink returns an empty Sink.
func NewSink() *Sink { return &Sink{sum: sha256.New()} }

// Write implements io.Writer.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sum.Write(p)
	s.n += int64(len(p))
	return len(p), nil
}

// Received returns the bytes written so far.
func (s *Sink) Received() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Sum returns the SHA-256 of what was written.
func (s *Sink) Sum() [32]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [32]byte
	copy(out[:], s.sum.Sum(nil))
	return out
}

// TransferResult is the outcome of Transfer.
type TransferResult struct {
	Sent, Received int64
	SentSum        [32]byte
	ReceivedSum    [32]byte
	Took           time.Duration
	// Pipe and Listen are the two CLI processes: each ran once, so a
	// matching hash means one stream carried everything.
	Pipe, Listen *Proc
}

// OK reports whether everything sent arrived intact.
func (r TransferResult) OK() bool {
	return r.Sent == r.Received && r.SentSum == r.ReceivedSum
}

// Transfer sends src from a to b over one stream: `peer listen` on b
// writes into a Sink, `peer pipe b` on a reads src. It returns when both
// commands have ended, or an error when one failed or timeout passed.
func Transfer(ctx context.Context, a, b *Peer, src *Source, timeout time.Duration) (TransferResult, error) {
	return transfer(ctx, a, b, src, src, NewSink(), timeout)
}

// hashSink is what transfer writes B's output into: a Sink or a GapSink.
type hashSink interface {
	io.Writer
	Received() int64
	Sum() [32]byte
}

// transfer is Transfer with the pipe reading in (src itself, or a reader
// over it) and B's output going to sink.
func transfer(ctx context.Context, a, b *Peer, src *Source, in io.Reader, sink hashSink, timeout time.Duration) (TransferResult, error) {
	var res TransferResult
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ln, err := b.Listen(ctx, sink)
	if err != nil {
		return res, err
	}
	res.Listen = ln
	pipe, err := a.Pipe(ctx, b.ID, in, nil)
	if err != nil {
		ln.Stop()
		return res, err
	}
	res.Pipe = pipe
	start := time.Now()
	var errs []error
	if err := pipe.Wait(); err != nil {
		errs = append(errs, fmt.Errorf("peer pipe: %w\n%s", err, indent(pipe.Tail(20))))
	}
	select {
	case <-ln.Done():
	case <-time.After(10 * time.Second):
		ln.Stop()
	}
	if err := ln.Err(); err != nil {
		errs = append(errs, fmt.Errorf("peer listen: %w\n%s", err, indent(ln.Tail(20))))
	}
	res.Took = time.Since(start)
	res.Sent, res.SentSum = src.Sent(), src.Sum()
	res.Received, res.ReceivedSum = sink.Received(), sink.Sum()
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("transfer: %w after %s (%d of %d bytes arrived)", ctx.Err(), res.Took.Round(time.Millisecond), res.Received, src.size))
	}
	return res, errors.Join(errs...)
}
