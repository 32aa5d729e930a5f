package exchange

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func listen(t *testing.T) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// count reads what server received until it is quiet for 100 ms.
func count(server net.PacketConn) int {
	n := 0
	buf := make([]byte, 64)
	for {
		server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, err := server.ReadFrom(buf); err != nil {
			return n
		}
		n++
	}
}

func TestRunGivesUpAfterTries(t *testing.T) {
	server, conn := listen(t), listen(t)
	err := Run(context.Background(), Config{
		Conn: conn, To: server.LocalAddr(), Retry: 50 * time.Millisecond, Tries: 3,
		Request: func() []byte { return []byte("req") },
		Answer:  func([]byte, net.Addr) (Verdict, error) { return Skip, nil },
	})
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Run returned %v, want ErrNoAnswer", err)
	}
	if n := count(server); n != 3 {
		t.Fatalf("the server got %d requests, want 3", n)
	}
}

func TestRunEndsWithTheContext(t *testing.T) {
	server, conn := listen(t), listen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Millisecond)
	defer cancel()
	err := Run(ctx, Config{
		Conn: conn, To: server.LocalAddr(), Retry: time.Hour,
		Request: func() []byte { return []byte("req") },
		Answer:  func([]byte, net.Addr) (Verdict, error) { return Skip, nil },
	})
	if !errors.Is(err, ErrNoAnswer) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run returned %v, want ErrNoAnswer and DeadlineExceeded", err)
	}
}

// TestRunAgainAndDone answers the first request with "again" and the
// second with "done": Run sends twice at once and returns nil.
func TestRunAgainAndDone(t *testing.T) {
	server, conn := listen(t), listen(t)
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := server.ReadFrom(buf)
			if err != nil {
				return
			}
			server.WriteTo(append([]byte("re:"), buf[:n]...), from)
		}
	}()
	sent := 0
	err := Run(context.Background(), Config{
		Conn: conn, To: server.LocalAddr(), Retry: time.Hour, Tries: 1,
		Request: func() []byte { sent++; return []byte{byte('0' + sent)} },
		Answer: func(b []byte, _ net.Addr) (Verdict, error) {
			if string(b) == "re:1" {
				return Again, nil
			}
			return Done, nil
		},
	})
	if err != nil || sent != 2 {
		t.Fatalf("Run returned %v after %d requests, want nil after 2", err, sent)
	}
}

func TestRunReturnsTheAnswersError(t *testing.T) {
	server, conn := listen(t), listen(t)
	go func() {
		buf := make([]byte, 64)
		_, from, err := server.ReadFrom(buf)
		if err == nil {
			server.WriteTo([]byte("bad"), from)
		}
	}()
	bad := errors.New("bad answer")
	err := Run(context.Background(), Config{
		Conn: conn, To: server.LocalAddr(), Retry: time.Hour, Tries: 1,
		Request: func() []byte { return []byte("req") },
		Answer:  func([]byte, net.Addr) (Verdict, error) { return Skip, bad },
	})
	if !errors.Is(err, bad) {
		t.Fatalf("Run returned %v, want the answer's error", err)
	}
}
