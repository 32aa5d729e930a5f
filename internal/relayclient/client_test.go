package relayclient

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
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

func TestBindGivesUpWhenNobodyAnswers(t *testing.T) {
	silent := listen(t) // a socket nobody answers from
	conn := listen(t)
	id, err := crypto.GenerateIdentity(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, err := Bind(ctx, conn, silent.LocalAddr(), id); !errors.Is(err, ErrBindTimeout) {
		t.Fatalf("Bind returned %v, want ErrBindTimeout", err)
	}
	// It asked again after bindRetry: two binds in 700 ms.
	n := 0
	buf := make([]byte, wire.MaxFrame)
	for {
		silent.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		k, _, err := silent.ReadFrom(buf)
		if err != nil {
			break
		}
		if k == 0 || buf[0] != wire.TypeRelayBind {
			t.Fatalf("the relay got a %d-byte frame, want a bind", k)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("the silent relay got %d binds, want 2 (one retry)", n)
	}
}

func TestAddrPortUnmaps(t *testing.T) {
	for in, want := range map[net.Addr]string{
		&net.UDPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 7}: "192.0.2.1:7",
		&net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 7}:        "192.0.2.1:7",
		nil: "invalid AddrPort",
	} {
		if got := addrPort(in).String(); got != want {
			t.Errorf("addrPort(%v) = %s, want %s", in, got, want)
		}
	}
}
