package turnrelay

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
)

func TestOpenSocketsServesTURN(t *testing.T) {
	pcs, lns, err := OpenSockets(context.Background(), "127.0.0.1:0", "127.0.0.1:0", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(pcs) != 3 || len(lns) != 1 {
		t.Fatalf("%d UDP sockets, %d listeners; want 3 and 1", len(pcs), len(lns))
	}
	s, err := New(Config{PacketConns: pcs, Listeners: lns, Secret: testSecret, Realm: testRealm})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ts := &testServer{Server: s, udp: pcs[0].LocalAddr().String(), tcp: lns[0].Addr().String()}
	u, p := crypto.TURNCredentials(testSecret, "frank", time.Hour, time.Now())
	for _, tcp := range []bool{false, true} {
		if _, err := allocate(newClient(t, ts, u, p, tcp)); err != nil {
			t.Fatalf("allocate (tcp=%v): %v", tcp, err)
		}
	}
}

func TestOpenSocketsErrors(t *testing.T) {
	if _, _, err := OpenSockets(context.Background(), "", "", 1); !errors.Is(err, ErrNoSockets) {
		t.Fatalf("nothing to open: %v", err)
	}
	// A TCP port already taken without SO_REUSEPORT: the UDP group opened
	// first must be closed again.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, _, err := OpenSockets(context.Background(), "127.0.0.1:0", busy.Addr().String(), 2); err == nil {
		t.Fatal("busy TCP port accepted")
	}
}
