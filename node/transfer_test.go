package node

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// transfer is one stream from a to b: n pseudo-random bytes, paced at rate
// bytes per second (0: as fast as possible). progress reports bytes sent.
type transfer struct {
	sent     chan int64 // progress, every chunk (non-blocking)
	sendHash chan string
	recvHash chan string
	recvN    chan int64
	errs     chan error
}

func startTransfer(t *testing.T, a, b *testNode, n int64, rate float64) *transfer {
	t.Helper()
	tr := &transfer{
		sent: make(chan int64, 1024), sendHash: make(chan string, 1),
		recvHash: make(chan string, 1), recvN: make(chan int64, 1), errs: make(chan error, 2),
	}
	l, err := b.ListenPort(9)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			tr.errs <- err
			return
		}
		defer c.Close()
		h, got, err := readAndHash(c)
		if err != nil {
			tr.errs <- err
			return
		}
		tr.recvHash <- h
		tr.recvN <- got
	}()
	c, err := a.DialPort(tctx(t, 10*time.Second), b.ID(), 9)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		h, err := sendPaced(c, n, rate, tr.sent)
		if err != nil {
			tr.errs <- err
			return
		}
		tr.sendHash <- h
	}()
	return tr
}

// sendPaced writes n pseudo-random bytes in 32 KiB chunks at about rate
// bytes per second, then closes the write side.
func sendPaced(c net.Conn, n int64, rate float64, progress chan<- int64) (string, error) {
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{7})
	buf := make([]byte, 32<<10)
	start := time.Now()
	var done int64
	for done < n {
		k := min(int64(len(buf)), n-done)
		rng.Read(buf[:k])
		if _, err := c.Write(buf[:k]); err != nil {
			return "", err
		}
		h.Write(buf[:k])
		done += k
		select {
		case progress <- done:
		default:
		}
		if rate > 0 {
			if ahead := time.Duration(float64(done)/rate*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
	c.(*Conn).CloseWrite()
	return hex.EncodeToString(h.Sum(nil)), nil
}

// waitSent waits until at least n bytes went out.
func (tr *transfer) waitSent(t *testing.T, n int64) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case got := <-tr.sent:
			if got >= n {
				return
			}
		case err := <-tr.errs:
			t.Fatal(err)
		case <-timeout:
			t.Fatalf("fewer than %d bytes sent in 20 s", n)
		}
	}
}

// finish waits for both ends and compares the hashes.
func (tr *transfer) finish(t *testing.T, n int64, within time.Duration) {
	t.Helper()
	timeout := time.After(within)
	var sh, rh string
	for sh == "" || rh == "" {
		select {
		case sh = <-tr.sendHash:
		case rh = <-tr.recvHash:
		case err := <-tr.errs:
			t.Fatal(err)
		case <-timeout:
			t.Fatalf("transfer not done within %v", within)
		}
	}
	if got := <-tr.recvN; got != n {
		t.Fatalf("received %d bytes, want %d", got, n)
	}
	if sh != rh {
		t.Fatalf("SHA-256 differs: sent %s, received %s", sh, rh)
	}
}

func TestRelayOnly20MB(t *testing.T) {
	m := startMesh(t)
	noDirect := func(c *Config) { c.NoDirect = true }
	a, b := m.newNode(noDirect), m.newNode(noDirect)
	const n = 20 << 20
	start := time.Now()
	tr := startTransfer(t, a, b, n, 0)
	tr.finish(t, n, 60*time.Second)
	t.Logf("20 MiB through the relay in %v (%.1f MB/s)", time.Since(start), n/time.Since(start).Seconds()/1e6)
	if peerPath(a, b) != "relay" || peerPath(b, a) != "relay" {
		t.Fatalf("paths %s/%s, want relay", peerPath(a, b), peerPath(b, a))
	}
	if a.sock.Stats().DirectSent.Load() != 0 || b.sock.Stats().DirectSent.Load() != 0 {
		t.Fatal("data went direct with NoDirect")
	}
}

func TestDirectCutMidTransferFallsBackToRelay(t *testing.T) {
	m := startMesh(t)
	a, b := m.newNode(nil), m.newNode(nil)
	const n = 12 << 20
	tr := startTransfer(t, a, b, n, 3e6) // about 4 s
	waitFor(t, 5*time.Second, "direct path", func() bool { return peerPath(a, b) == "direct" && peerPath(b, a) == "direct" })
	tr.waitSent(t, n/4)
	relayBefore := a.sock.Stats().RelaySent.Load()
	a.cut.Store(true) // a's direct frames vanish both ways
	took := waitFor(t, 5*time.Second, "relay path after the cut", func() bool { return peerPath(a, b) == "relay" && peerPath(b, a) == "relay" })
	if took > 2*time.Second {
		t.Fatalf("fell back after %v, want within 2 s", took)
	}
	t.Logf("fell back to the relay %v after the cut", took)
	tr.finish(t, n, 30*time.Second)
	if a.sock.Stats().RelaySent.Load() == relayBefore {
		t.Fatal("nothing went through the relay after the cut")
	}
	if peerPath(a, b) != "relay" {
		t.Fatalf("path %s while the direct path is cut", peerPath(a, b))
	}
}

func TestRelayRestartMidTransfer(t *testing.T) {
	m := startMesh(t)
	noDirect := func(c *Config) { c.NoDirect = true }
	a, b := m.newNode(noDirect), m.newNode(noDirect)
	const n = 8 << 20
	tr := startTransfer(t, a, b, n, 3e6)
	tr.waitSent(t, n/4)
	m.restartRelay(500 * time.Millisecond)
	tr.finish(t, n, 30*time.Second)
}

func TestRebindMidTransfer(t *testing.T) {
	m := startMesh(t)
	a, b := m.newNode(nil), m.newNode(nil)
	const n = 8 << 20
	tr := startTransfer(t, a, b, n, 3e6)
	waitFor(t, 5*time.Second, "direct path", func() bool { return peerPath(a, b) == "direct" && peerPath(b, a) == "direct" })
	tr.waitSent(t, n/4)
	old := a.sock.LocalAddrPort()
	// The NAT rebinds a's mapping: a's socket moves to a new port.
	if err := a.sock.Rebind("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	newAddr := a.sock.LocalAddrPort()
	if newAddr == old {
		t.Fatal("same port after rebind")
	}
	tr.finish(t, n, 30*time.Second)
	waitFor(t, 5*time.Second, "b's path to a's new address", func() bool {
		for _, p := range b.Status().Peers {
			if p.ID == a.ID() {
				return p.Path == "direct" && p.Remote == newAddr.String()
			}
		}
		return false
	})
	waitFor(t, 5*time.Second, "re-registration at the new address", func() bool { return a.Status().Reflexive == newAddr.String() })
}
