package sockopt

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestListenUDPGroupSharesPortAndSpreadsFlows(t *testing.T) {
	ctx := context.Background()
	const n = 4
	conns, err := ListenUDPGroup(ctx, "127.0.0.1:0", n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	if len(conns) != n {
		t.Fatalf("got %d sockets, want %d", len(conns), n)
	}
	addr := conns[0].LocalAddr().(*net.UDPAddr)
	if addr.Port == 0 {
		t.Fatal("port 0 after bind")
	}
	for i, c := range conns {
		if got := c.LocalAddr().(*net.UDPAddr).Port; got != addr.Port {
			t.Fatalf("socket %d bound port %d, want %d", i, got, addr.Port)
		}
	}

	// A socket without SO_REUSEPORT cannot join the group.
	if c, err := ListenUDP(ctx, addr.String(), false); err == nil {
		c.Close()
		t.Fatal("bind without SO_REUSEPORT to a group's port succeeded")
	}

	// Send one datagram from each of many source ports: the kernel hashes
	// flows over the group, so more than one socket must receive.
	const flows = 64
	var (
		mu      sync.Mutex
		perSock = make([]int, n)
		total   int
		done    = make(chan struct{})
	)
	deadline := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			c.SetReadDeadline(deadline)
			for {
				if _, _, err := c.ReadFromUDP(buf); err != nil {
					return
				}
				mu.Lock()
				perSock[i]++
				total++
				if total == flows {
					close(done)
				}
				mu.Unlock()
			}
		}()
	}
	for range flows {
		s, err := net.DialUDP("udp", nil, addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("received %d of %d datagrams", total, flows)
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Now())
	}
	wg.Wait()
	used := 0
	for _, k := range perSock {
		if k > 0 {
			used++
		}
	}
	if used < 2 {
		t.Fatalf("all %d flows landed on one socket (%v): SO_REUSEPORT not spreading", flows, perSock)
	}
	t.Logf("datagrams per socket: %v", perSock)
}

func TestListenUDPGroupSize(t *testing.T) {
	if _, err := ListenUDPGroup(context.Background(), "127.0.0.1:0", 0); !errors.Is(err, ErrGroupSize) {
		t.Fatalf("n=0: err = %v, want ErrGroupSize", err)
	}
}

func TestListenUDPGroupClosesOnError(t *testing.T) {
	// Occupy a port without SO_REUSEPORT: the group's first bind must fail.
	blocker, err := ListenUDP(context.Background(), "127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close()
	if _, err := ListenUDPGroup(context.Background(), blocker.LocalAddr().String(), 2); err == nil {
		t.Fatal("group on a port held without SO_REUSEPORT succeeded")
	}
}

func TestListenTCPReusePort(t *testing.T) {
	ctx := context.Background()
	a, err := ListenTCP(ctx, "127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := ListenTCP(ctx, a.Addr().String(), true)
	if err != nil {
		t.Fatalf("second listener on %s: %v", a.Addr(), err)
	}
	defer b.Close()
	if c, err := ListenTCP(ctx, a.Addr().String(), false); err == nil {
		c.Close()
		t.Fatal("listener without SO_REUSEPORT on a shared port succeeded")
	}

	// Connections reach one of the two listeners; both accept loops see
	// every connection between them.
	accepted := make(chan string, 64)
	for _, ln := range []net.Listener{a, b} {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- c.LocalAddr().String()
				c.Close()
			}
		}()
	}
	const conns = 32
	for range conns {
		c, err := net.DialTimeout("tcp", a.Addr().String(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	for i := range conns {
		select {
		case <-accepted:
		case <-time.After(5 * time.Second):
			t.Fatalf("accepted %d of %d connections", i, conns)
		}
	}
}

func TestListenBadAddress(t *testing.T) {
	if _, err := ListenUDP(context.Background(), "not-an-address", true); err == nil {
		t.Fatal("ListenUDP accepted a bad address")
	}
	if _, err := ListenTCP(context.Background(), "not-an-address", true); err == nil {
		t.Fatal("ListenTCP accepted a bad address")
	}
}

func TestSetBuffers(t *testing.T) {
	c, err := ListenUDP(context.Background(), "127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const want = 1 << 20
	if err := SetBuffers(c, want, want); err != nil {
		t.Fatal(err)
	}
	rc, _ := c.SyscallConn()
	var rcv, snd int
	rc.Control(func(fd uintptr) {
		rcv, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	// Linux doubles the value for its bookkeeping; without privilege it
	// caps it at rmem_max, so only check it grew past the 208 KiB default
	// when the limit or our privilege allows.
	t.Logf("SO_RCVBUF %d, SO_SNDBUF %d", rcv, snd)
	if os.Geteuid() == 0 && (rcv < want || snd < want) {
		t.Fatalf("as root: SO_RCVBUF %d, SO_SNDBUF %d, want at least %d", rcv, snd, want)
	}
}
