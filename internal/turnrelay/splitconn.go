package turnrelay

import (
	"fmt"
	"net"
	"sync/atomic"
)

// splitConn is one UDP socket that pion reads through its own descriptor
// and writes through several duplicates of it.
//
// Go serialises the writes on one descriptor with a lock that a writer
// holds for its whole sendto, even when the kernel preempts its thread.
// Every allocation's goroutine writes its peer's packets to the client
// through the shared listening socket, and so does the socket's reader when
// it answers a STUN request: on a busy machine the reader waits in that
// queue while its receive buffer overflows (measured: most of the loss at
// 5000 allocations). Duplicated descriptors are the same socket (same port,
// same buffers) with a lock each, so writes spread over them.
type splitConn struct {
	*net.UDPConn // reads, LocalAddr, deadlines
	writers      []*net.UDPConn
	next         atomic.Uint32
}

// newSplitConn duplicates c's descriptor n times for writing. With n < 1 it
// returns c itself.
func newSplitConn(c *net.UDPConn, n int) (net.PacketConn, error) {
	if n < 1 {
		return c, nil
	}
	s := &splitConn{UDPConn: c}
	for range n {
		f, err := c.File() // a dup(2) of the descriptor
		if err != nil {
			s.closeWriters()
			return nil, fmt.Errorf("duplicate socket: %w", err)
		}
		pc, err := net.FilePacketConn(f) // dups again, registers with the poller
		f.Close()
		if err != nil {
			s.closeWriters()
			return nil, fmt.Errorf("duplicate socket: %w", err)
		}
		u, ok := pc.(*net.UDPConn)
		if !ok {
			pc.Close()
			s.closeWriters()
			return nil, fmt.Errorf("duplicate socket: got %T", pc)
		}
		s.writers = append(s.writers, u)
	}
	return s, nil
}

// WriteTo sends through the next duplicate, round robin.
func (s *splitConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	return s.writer().WriteTo(p, addr)
}

// writer returns the next duplicate, round robin.
func (s *splitConn) writer() *net.UDPConn {
	return s.writers[s.next.Add(1)%uint32(len(s.writers))]
}

// Close closes the duplicates and the socket.
func (s *splitConn) Close() error {
	s.closeWriters()
	return s.UDPConn.Close()
}

func (s *splitConn) closeWriters() {
	for _, w := range s.writers {
		w.Close()
	}
}
