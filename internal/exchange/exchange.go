// Package exchange is the one request-and-answer loop over a net.PacketConn
// that owns its socket: send a request, read under a deadline until an
// answer matches, send again after a retry interval, and give up when the
// tries or the context run out. relayclient.Bind and netcheck's STUN
// requests use it; a socket with a reader of its own (the path layer's)
// demultiplexes answers there instead.
package exchange

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Verdict is what the caller makes of one datagram.
type Verdict int

// Verdicts.
const (
	// Skip: not the answer; keep reading until the try's deadline.
	Skip Verdict = iota
	// Again: send a new request at once (Request is called again).
	Again
	// Done: the answer; Run returns nil.
	Done
)

// ErrNoAnswer is returned, wrapped, when the tries or the context ran out
// before an answer; with a context that ended, the context's error is
// wrapped too.
var ErrNoAnswer = errors.New("no answer")

// Config is one exchange.
type Config struct {
	// Conn is the socket; Run sets and finally clears its read deadline.
	Conn net.PacketConn
	// To is where requests go.
	To net.Addr
	// Retry is how long a try waits for the answer. Required.
	Retry time.Duration
	// Tries bounds the requests sent after a try timed out; zero means
	// until the context ends. (Requests sent at once after Again do not
	// count.)
	Tries int
	// Request returns the datagram to send; it is called before every send.
	Request func() []byte
	// Answer judges one datagram of n bytes from from. An error ends Run
	// with that error.
	Answer func(b []byte, from net.Addr) (Verdict, error)
	// BufSize is the read buffer's size. Default 1500.
	BufSize int
}

// Run runs the exchange until Answer says Done or returns an error, a
// read or write fails, or the tries or ctx run out.
func Run(ctx context.Context, c Config) error {
	defer c.Conn.SetReadDeadline(time.Time{})
	size := c.BufSize
	if size <= 0 {
		size = 1500
	}
	buf := make([]byte, size)
	for try := 1; ; try++ {
		if _, err := c.Conn.WriteTo(c.Request(), c.To); err != nil {
			return fmt.Errorf("send to %v: %w", c.To, err)
		}
		deadline := time.Now().Add(c.Retry)
		ctxLast := false // this try ends with the context
		if d, ok := ctx.Deadline(); ok && !d.After(deadline) {
			deadline, ctxLast = d, true
		}
		if err := c.Conn.SetReadDeadline(deadline); err != nil {
			return fmt.Errorf("set deadline: %w", err)
		}
		again := false
		for !again {
			n, from, err := c.Conn.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return fmt.Errorf("read: %w", err)
			}
			v, err := c.Answer(buf[:n], from)
			if err != nil {
				return err
			}
			switch v {
			case Done:
				return nil
			case Again:
				again = true
			}
		}
		if again && ctx.Err() == nil {
			try--
			continue
		}
		if ctx.Err() != nil || ctxLast {
			cause := ctx.Err()
			if cause == nil {
				cause = context.DeadlineExceeded
			}
			return fmt.Errorf("%w from %v: %w", ErrNoAnswer, c.To, cause)
		}
		if c.Tries > 0 && try >= c.Tries {
			return fmt.Errorf("%w from %v after %d tries", ErrNoAnswer, c.To, try)
		}
	}
}
