package pathsock

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestFlushRuns sends one batch of mixed sizes and destinations and checks
// that each frame arrives whole and alone, in order.
func TestFlushRuns(t *testing.T) {
	s := newTestSock(t, nil)
	var rx [2]*net.UDPConn
	for i := range rx {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rx[i] = c
	}
	to := func(i int) netip.AddrPort { return rx[i].LocalAddr().(*net.UDPAddr).AddrPort() }
	type want struct {
		rx   int
		size int
	}
	plan := []want{{0, 1353}, {0, 1353}, {0, 1353}, {0, 700}, {0, 1353}, {1, 1353}, {1, 1353}, {0, 90}}
	var batch []outPacket
	for i, w := range plan {
		bp := s.getBuf()
		for k := range w.size {
			(*bp)[k] = byte(i)
		}
		batch = append(batch, outPacket{bp: bp, n: w.size, to: to(w.rx)})
	}
	s.flush(batch, make([]byte, 0, 1<<16), make([]byte, 0, 64))
	buf := make([]byte, 1<<16)
	for i, w := range plan {
		rx[w.rx].SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := rx[w.rx].Read(buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if n != w.size || buf[0] != byte(i) || buf[n-1] != byte(i) {
			t.Fatalf("frame %d: got %d bytes starting %d, want %d bytes of %d", i, n, buf[0], w.size, i)
		}
	}
}
