package mesh

import (
	"testing"
)

// BenchmarkSeal is the sender's cost of a forward: encode and tag a
// 1200-byte payload.
func BenchmarkSeal(b *testing.B) {
	k := mustKey(b, secret)
	m := Message{Kind: KindRelayed, Time: 1, Sender: 1, Dst: dst, Payload: make([]byte, 1200)}
	buf := make([]byte, 0, MaxMessage)
	b.SetBytes(1200)
	b.ReportAllocs()
	for b.Loop() {
		m.Seq++
		buf, _ = k.Append(buf[:0], &m)
	}
}

// BenchmarkCheck is the receiver's cost: every check of Node.check on an
// authentic 1200-byte message (parse, rate, clock, tag, replay window).
func BenchmarkCheck(b *testing.B) {
	k := mustKey(b, secret)
	n, err := NewNode(Config{Key: k, Conn: listen(b, "127.0.0.1:0"), Rate: -1})
	if err != nil {
		b.Fatal(err)
	}
	from := n.Addr()
	m := Message{Kind: KindRelayed, Sender: 1, Dst: dst, Payload: make([]byte, 1200)}
	buf := make([]byte, 0, MaxMessage)
	b.SetBytes(1200)
	b.ReportAllocs()
	for b.Loop() {
		m.Seq++
		m.Time = n.cfg.Now().UnixMilli()
		buf, _ = k.Append(buf[:0], &m)
		if _, ok := n.check(buf, from, n.cfg.Now()); !ok {
			b.Fatal("refused")
		}
	}
}

// BenchmarkLoopbackHop is one extra hop end to end on loopback: send a
// 1200-byte forward to another node and wait until its handler has it.
// ns/op is the added latency of a forward through the home instance, less
// the network between instances.
func BenchmarkLoopbackHop(b *testing.B) {
	k := mustKey(b, secret)
	recv := startNode(b, Config{Key: k, Conn: listen(b, "127.0.0.1:0"), Rate: -1})
	send, err := NewNode(Config{Key: k, Conn: listen(b, "127.0.0.1:0")})
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 1200)
	buf := make([]byte, 0, MaxMessage)
	to := recv.Addr()
	b.SetBytes(1200)
	b.ReportAllocs()
	for b.Loop() {
		if buf, err = send.Send(buf, to, KindRelayed, dst, payload); err != nil {
			b.Fatal(err)
		}
		<-recv.got
	}
}
