package peercmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/keymesh/keymesh/internal/daemon"

	"github.com/keymesh/keymesh/internal/cmd/usage"
)

var cmdPipe = &command{
	name:    "pipe",
	args:    "<peer-id|overlay-addr>",
	summary: "connect stdin and stdout to a stream to a peer (like nc)",
	help: `Opens a stream to the peer (port 0: where "peer listen" waits, unless
--port) and copies stdin to it and it to stdout. At the end of stdin the
sending side is closed (the remote reads EOF); the command ends when both
directions have ended: "peer pipe B < file" ends once the whole file is sent
and B has closed its side. When stdin is a terminal, the remote closing its
side ends the command. Exit status 1 when the stream failed (the peer reset
it, the session died), even after some data went through.`,
	setup: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		cl := c.socketFlag(fs)
		port := fs.Uint("port", 0, "the peer's stream `port` (0: the peer's \"peer listen\")")
		return func(ctx context.Context, args []string) error {
			if err := wantArgs(args, "<peer-id|overlay-addr>"); err != nil {
				return err
			}
			peer, err := peerArg(args[0])
			if err != nil {
				return err
			}
			if *port > 65535 {
				return usage.Errorf("--port %d: want 0-65535", *port)
			}
			s, err := cl.Dial(ctx, peer, uint16(*port))
			if err != nil {
				return err
			}
			return pump(ctx, cl, s, c.stdin, c.stdout)
		}
	},
}

var cmdListen = &command{
	name:    "listen",
	summary: "accept a stream from a peer onto stdin and stdout",
	help: `Waits for one incoming stream (port 0, what "peer pipe" opens, unless --port),
copies it to stdout and stdin to it, and exits when both directions have
ended (when stdin is a terminal: when the remote closes its side). With --keep it accepts streams one after another until interrupted,
writing each to stdout in turn; stdin is then not read (each stream's
sending side is closed at once). Only peers the daemon allows can connect
(see "peer up --allow"). Exit status 1 when the stream failed.`,
	setup: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		cl := c.socketFlag(fs)
		port := fs.Uint("port", 0, "stream `port` to accept on (0: the default, what \"peer pipe\" dials)")
		keep := fs.Bool("keep", false, "accept streams one after another until interrupted")
		verbose := fs.Bool("verbose", false, "say on stderr who connected")
		return func(ctx context.Context, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if *port > 65535 {
				return usage.Errorf("--port %d: want 0-65535", *port)
			}
			for {
				s, err := cl.Accept(ctx, uint16(*port))
				if err != nil {
					if *keep && ctx.Err() != nil {
						return nil
					}
					return err
				}
				if *verbose {
					fmt.Fprintf(c.stderr, "stream from %s\n", s.Peer)
				}
				in := c.stdin
				if *keep {
					in = nil
				}
				err = pump(ctx, cl, s, in, c.stdout)
				if !*keep {
					return err
				}
				if err != nil {
					fmt.Fprintf(c.stderr, "peer listen: %s\n", oneLine(err))
				}
			}
		}
	},
}

// pump copies in to s (then half-closes s) and s to out. It returns when
// both directions have ended, so neither side's data is cut short: "peer
// pipe B < file" sends the whole file even when B closes its side first.
// An interactive stdin (a terminal) is the exception: the remote's end ends
// the command, as with nc. A nil in closes the sending side at once. ctx
// ending closes the stream. At the end it asks the daemon how the stream
// ended: a stream the peer reset is an error, though its bytes ended as
// if all was well.
func pump(ctx context.Context, cl *daemon.Client, s *daemon.Stream, in io.Reader, out io.Writer) error {
	err := copyBoth(ctx, s, in, out)
	s.Close()
	if err != nil || ctx.Err() != nil || s.ID == 0 {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := cl.StreamResult(rctx, s.ID); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return nil
}

func copyBoth(ctx context.Context, s *daemon.Stream, in io.Reader, out io.Writer) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	inDone := make(chan struct{})
	if in == nil {
		_ = s.CloseWrite()
		close(inDone)
	} else {
		go func() {
			defer close(inDone)
			if _, err := io.Copy(s, in); err == nil {
				_ = s.CloseWrite()
			}
		}()
	}
	_, err := io.Copy(out, s)
	if err == nil && !isTerminal(in) {
		select {
		case <-inDone:
		case <-ctx.Done():
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// isTerminal reports whether r is a terminal (a character device other
// than /dev/null, which ends at once anyway).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
