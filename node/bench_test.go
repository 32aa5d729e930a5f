package node

import (
	"io"
	"testing"
	"time"
)

// BenchmarkDirectStream moves b.N x 1 MiB over one stream on the direct
// path (loopback).
func BenchmarkDirectStream(b *testing.B) { benchStream(b, false) }

// BenchmarkRelayStream is the same through the relay.
func BenchmarkRelayStream(b *testing.B) { benchStream(b, true) }

func benchStream(b *testing.B, viaRelay bool) {
	m := startMeshTB(b)
	mod := func(c *Config) { c.NoDirect = viaRelay }
	a, z := m.newNode(mod), m.newNode(mod)
	done := make(chan int64, 1)
	go func() {
		c, err := z.Listen().Accept()
		if err != nil {
			done <- 0
			return
		}
		n, _ := io.Copy(io.Discard, c)
		done <- n
	}()
	c, err := a.Dial(tctxTB(b, time.Minute), z.ID())
	if err != nil {
		b.Fatal(err)
	}
	want := "direct"
	if viaRelay {
		want = "relay"
	}
	for peerPath(a, z) != want {
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.(*Conn).CloseWrite()
	if n := <-done; n != int64(b.N)*int64(len(buf)) {
		b.Fatalf("received %d", n)
	}
}
