package turnrelay

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"
)

func TestSplitConnWritesFromTheSameSocket(t *testing.T) {
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := newSplitConn(u, 3)
	if err != nil {
		t.Fatal(err)
	}
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()

	// Concurrent writers: every datagram arrives from the socket's address.
	const n = 60
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := pc.WriteTo([]byte{byte(i)}, sink.LocalAddr()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	seen := map[byte]bool{}
	buf := make([]byte, 16)
	for len(seen) < n {
		sink.SetReadDeadline(time.Now().Add(3 * time.Second))
		k, from, err := sink.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("received %d of %d: %v", len(seen), n, err)
		}
		if from.String() != u.LocalAddr().String() {
			t.Fatalf("datagram from %s, want the socket's %s", from, u.LocalAddr())
		}
		seen[buf[0]] = k == 1
	}

	// Reads go through the original descriptor.
	if _, err := sink.WriteTo([]byte("back"), u.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	k, _, err := pc.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:k], []byte("back")) {
		t.Fatalf("read %q, %v", buf[:k], err)
	}

	// Close closes the socket and every duplicate: the port is free again.
	addr := u.LocalAddr().(*net.UDPAddr)
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := net.ListenUDP("udp4", addr)
	if err != nil {
		t.Fatalf("port still held after Close: %v", err)
	}
	again.Close()
}
