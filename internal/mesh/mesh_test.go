package mesh

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

var (
	secret = []byte("0123456789abcdef0123456789abcdef")
	dst    = netip.MustParseAddrPort("198.51.100.7:40000")
)

func mustKey(t testing.TB, s []byte) *Key {
	t.Helper()
	k, err := NewKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCodecRoundTrip(t *testing.T) {
	k := mustKey(t, secret)
	for _, d := range []netip.AddrPort{dst, netip.MustParseAddrPort("[2001:db8::1]:9")} {
		in := Message{Kind: KindRelayed, Time: 1700000000123, Sender: 42, Seq: 7, Dst: d, Payload: []byte("frame")}
		b, err := k.Append(nil, &in)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != Overhead+len(in.Payload) {
			t.Fatalf("length %d, want %d", len(b), Overhead+len(in.Payload))
		}
		out, err := k.Open(b)
		if err != nil {
			t.Fatal(err)
		}
		if out.Kind != in.Kind || out.Time != in.Time || out.Sender != in.Sender || out.Seq != in.Seq ||
			out.Dst != in.Dst || !bytes.Equal(out.Payload, in.Payload) {
			t.Fatalf("got %+v, want %+v", out, in)
		}
	}
}

func TestCodecRefuses(t *testing.T) {
	k := mustKey(t, secret)
	good, _ := k.Append(nil, &Message{Kind: KindPunch, Time: 1, Sender: 1, Seq: 1, Dst: dst, Payload: []byte{0x20}})
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"short":   {good[:Overhead-1], ErrShort},
		"magic":   {mut(func(b []byte) []byte { b[0] = 0x20; return b }), ErrMagic},
		"version": {mut(func(b []byte) []byte { b[2] = 9; return b }), ErrVersion},
		"kind":    {mut(func(b []byte) []byte { b[3] = 9; return b }), ErrKind},
		"long":    {append(bytes.Clone(good), make([]byte, MaxMessage)...), ErrTooLong},
		"port 0":  {mut(func(b []byte) []byte { b[offPort], b[offPort+1] = 0, 0; return b }), ErrAddr},
		"flipped": {mut(func(b []byte) []byte { b[HeaderLen] ^= 1; return b }), ErrMAC},
		"other key": {func() []byte {
			b, _ := mustKey(t, []byte("another secret of 32 bytes......")).Append(nil, &Message{Kind: KindPunch, Seq: 1, Dst: dst})
			return b
		}(), ErrMAC},
	}
	for name, c := range cases {
		if _, err := k.Open(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", name, err, c.want)
		}
	}
	if _, err := NewKey([]byte("short")); !errors.Is(err, ErrSecret) {
		t.Errorf("short secret: %v", err)
	}
	if _, err := k.Append(nil, &Message{Kind: KindPunch, Dst: dst, Payload: make([]byte, MaxPayload+1)}); !errors.Is(err, ErrTooLong) {
		t.Errorf("long payload: %v", err)
	}
}

func TestReplayWindow(t *testing.T) {
	r := newReplayTable(2)
	steps := []struct {
		sender, seq uint64
		want        bool
	}{
		{1, 1, true}, {1, 1, false}, {1, 3, true}, {1, 2, true}, {1, 2, false},
		{1, 3 + windowBits, true}, {1, 3, false}, // fell out of the window
		{1, 4, true}, // the oldest number still inside the window
		{1, 5 + windowBits - 1, true}, {1, 0, false},
		{2, 1, true}, {3, 1, true}, // evicts sender 1 (seen longest ago)
		{2, 1, false},
	}
	for i, s := range steps {
		if got := r.accept(s.sender, s.seq, netip.AddrPort{}); got != s.want {
			t.Fatalf("step %d: accept(%d, %d) = %v, want %v", i, s.sender, s.seq, got, s.want)
		}
	}
	if len(r.senders) != 2 {
		t.Fatalf("%d senders kept, want the bound 2", len(r.senders))
	}
}

func TestParsePeers(t *testing.T) {
	p, err := ParsePeers(" 2=10.0.0.2:3490, 1=[fd00::1]:3490 ,")
	if err != nil {
		t.Fatal(err)
	}
	if p[2] != netip.MustParseAddrPort("10.0.0.2:3490") || p[1] != netip.MustParseAddrPort("[fd00::1]:3490") || len(p) != 2 {
		t.Fatalf("got %v", p)
	}
	if a := p.Addrs(); len(a) != 2 || a[0] != netip.MustParseAddr("fd00::1") {
		t.Fatalf("Addrs %v", a)
	}
	for _, bad := range []string{"x", "0=10.0.0.1:1", "70000=10.0.0.1:1", "1=10.0.0.1", "1=0.0.0.0:5", "1=10.0.0.1:1,1=10.0.0.2:1"} {
		if _, err := ParsePeers(bad); !errors.Is(err, ErrPeers) {
			t.Errorf("%q: err %v", bad, err)
		}
	}
}

// delivery is one message a test node handed to its Handler.
type delivery struct {
	kind    Kind
	dst     netip.AddrPort
	payload string
}

type testNode struct {
	*Node
	got chan delivery
}

func listen(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func startNode(t testing.TB, cfg Config) *testNode {
	t.Helper()
	tn := &testNode{got: make(chan delivery, 1024)}
	cfg.Handle = func(k Kind, d netip.AddrPort, p []byte) { tn.got <- delivery{k, d, string(p)} }
	n, err := NewNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn.Node = n
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = n.Serve(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return tn
}

// waitStats waits until the node has received want datagrams and finished
// checking every datagram it received.
func waitStats(t *testing.T, n *Node, want uint64) Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Received counts a datagram before its checks end in Accepted,
		// Heartbeats or one Dropped reason: wait for the outcome too.
		s := n.Stats()
		settled := s.Accepted + s.Heartbeats
		for _, d := range s.Dropped {
			settled += d
		}
		if s.Received >= want && settled == s.Received {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %d datagrams (%d checked), want %d", s.Received, settled, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNodeDropsStrangers: a stranger without the peer secret, one replaying
// a captured message, one with an old clock and one outside the allow-list
// get nothing delivered; the real peer does.
func TestNodeDropsStrangers(t *testing.T) {
	key := mustKey(t, secret)
	clock := time.Unix(1_800_000_000, 0)
	now := func() time.Time { return clock }
	recv := startNode(t, Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: now,
		Allow: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
	peer, err := NewNode(Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	to := recv.Addr()
	// The stranger sends from the same allowed address but has its own key.
	strangerConn := listen(t, "127.0.0.1:0")
	stranger, _ := NewNode(Config{Key: mustKey(t, []byte("a guessed secret, not the real one")), Conn: strangerConn, Now: now})

	if _, err := stranger.Send(nil, to, KindPunch, dst, []byte{0x20, 1}); err != nil {
		t.Fatal(err)
	}
	var captured []byte
	captured, err = peer.Send(nil, to, KindPunch, dst, []byte{0x20, 2})
	if err != nil {
		t.Fatal(err)
	}
	if d := <-recv.got; d.kind != KindPunch || d.dst != dst || d.payload != "\x20\x02" {
		t.Fatalf("delivered %+v", d)
	}
	// Replay the captured message, byte for byte, from another socket.
	if _, err := strangerConn.WriteToUDPAddrPort(captured, to); err != nil {
		t.Fatal(err)
	}
	// A message sent with a clock 11 s behind.
	stale, _ := NewNode(Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: func() time.Time { return clock.Add(-11 * time.Second) }})
	if _, err := stale.Send(nil, to, KindPunch, dst, []byte{0x20, 3}); err != nil {
		t.Fatal(err)
	}
	st := waitStats(t, recv.Node, 4)
	if st.Accepted != 1 || st.Dropped[DropBadTag] != 1 || st.Dropped[DropReplay] != 1 || st.Dropped[DropStale] != 1 {
		t.Fatalf("stats %+v: want 1 accepted, and 1 bad tag, 1 replay, 1 stale dropped", st)
	}

	// A node that allows only 127.0.0.2 drops the real peer's message from
	// 127.0.0.1 before looking at it further.
	strict := startNode(t, Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: now,
		Allow: []netip.Addr{netip.MustParseAddr("127.0.0.2")}})
	if _, err := peer.Send(nil, strict.Addr(), KindPunch, dst, []byte{0x20, 4}); err != nil {
		t.Fatal(err)
	}
	if st := waitStats(t, strict.Node, 1); st.Dropped[DropStranger] != 1 || st.Accepted != 0 {
		t.Fatalf("stats %+v: want the source outside Allow dropped", st)
	}
	select {
	case d := <-recv.got:
		t.Fatalf("delivered a dropped message: %+v", d)
	case d := <-strict.got:
		t.Fatalf("delivered a dropped message: %+v", d)
	default:
	}
}

// TestNodeRateLimit: one source gets Burst messages verified, then nothing
// until its bucket refills (on the injected clock).
func TestNodeRateLimit(t *testing.T) {
	key := mustKey(t, secret)
	var mu sync.Mutex
	clock := time.Unix(1_800_000_000, 0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	recv := startNode(t, Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: now, Rate: 1, Burst: 3})
	peer, _ := NewNode(Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: now})
	for i := range 5 {
		if _, err := peer.Send(nil, recv.Addr(), KindRelayed, dst, []byte{0x24, byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if st := waitStats(t, recv.Node, 5); st.Accepted != 3 || st.Dropped[DropRateLimited] != 2 {
		t.Fatalf("stats %+v: want 3 accepted, 2 rate limited", st)
	}
	mu.Lock()
	clock = clock.Add(time.Second)
	mu.Unlock()
	if _, err := peer.Send(nil, recv.Addr(), KindRelayed, dst, []byte{0x24, 9}); err != nil {
		t.Fatal(err)
	}
	if st := waitStats(t, recv.Node, 6); st.Accepted != 4 {
		t.Fatalf("stats %+v: want the refilled token to pass", st)
	}
}

// TestNodeAllowPrefixesFirst: with an allow-list of ranges, a message from
// outside them, rightly tagged or not, is dropped as a stranger before its
// tag is checked (no bad-tag count), and one from inside is accepted.
func TestNodeAllowPrefixesFirst(t *testing.T) {
	key := mustKey(t, secret)
	clock := time.Unix(1_800_000_000, 0)
	now := func() time.Time { return clock }
	outside := startNode(t, Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: now,
		AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	inside := startNode(t, Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: now,
		AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	peer, err := NewNode(Config{Key: key, Conn: listen(t, "127.0.0.1:0"), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	forger, _ := NewNode(Config{Key: mustKey(t, []byte("a guessed secret, not the real one")), Conn: listen(t, "127.0.0.1:0"), Now: now})
	for _, n := range []*Node{peer, forger} {
		if _, err := n.Send(nil, outside.Addr(), KindPunch, dst, []byte{0x20, 1}); err != nil {
			t.Fatal(err)
		}
	}
	if st := waitStats(t, outside.Node, 2); st.Dropped[DropStranger] != 2 || st.Dropped[DropBadTag] != 0 || st.Accepted != 0 {
		t.Fatalf("stats %+v: want both messages dropped as strangers, no tag checked", st)
	}
	if _, err := peer.Send(nil, inside.Addr(), KindPunch, dst, []byte{0x20, 2}); err != nil {
		t.Fatal(err)
	}
	if d := <-inside.got; d.payload != "\x20\x02" {
		t.Fatalf("delivered %+v", d)
	}
}
