// Package syncbuf is the buffer a test hands a process or a command as its
// output while it reads what arrived so far: a bytes.Buffer behind a mutex,
// keeping the first 4 MiB (enough to diagnose, bounded for a chatty
// process).
package syncbuf

import (
	"bytes"
	"sync"
)

// Max is how many bytes a Buffer keeps; later writes are dropped.
const Max = 4 << 20

// Buffer is safe for one writer and many readers. The zero value is ready.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer; it never fails.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > Max {
		return len(p), nil
	}
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
