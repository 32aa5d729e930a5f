package rzclient

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/wire"
)

// fakeServer plays the server's side by hand: it reads what the client sends
// and seals answers with the server key.
type fakeServer struct {
	t      testing.TB
	id     *crypto.Identity
	shared *[32]byte // with the client
	sent   chan wire.Message
	frames chan wire.Sealed // the same sends, as parsed frames
	client *Client
	now    func() time.Time
}

var serverAddr = netip.MustParseAddrPort("198.51.100.1:3478")

func newFake(t testing.TB, mod func(*Config)) *fakeServer {
	t.Helper()
	sid, _ := crypto.GenerateIdentity(nil)
	cid, _ := crypto.GenerateIdentity(nil)
	fs := &fakeServer{t: t, id: sid, sent: make(chan wire.Message, 64), frames: make(chan wire.Sealed, 64), now: time.Now}
	fs.shared, _ = sid.SharedKey(cid.ID())
	cfg := Config{
		Identity:   cid,
		Server:     serverAddr,
		ServerKey:  sid.ID(),
		AllowAny:   true,
		Retransmit: 20 * time.Millisecond,
		MaxBackoff: 40 * time.Millisecond,
		Send: func(b []byte, to netip.AddrPort) error {
			if to != serverAddr {
				t.Errorf("sent to %v", to)
			}
			s, err := wire.ParseRequest(b)
			if err != nil {
				t.Errorf("client sent a bad frame: %v", err)
				return nil
			}
			m, err := s.Open(fs.shared)
			if err != nil {
				t.Errorf("server cannot open the client's frame: %v", err)
				return nil
			}
			select {
			case fs.frames <- s:
			default:
			}
			fs.sent <- m
			return nil
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fs.client = c
	return fs
}

func (fs *fakeServer) frame(body wire.Body) []byte {
	return wire.SealFrame(nil, fs.id.ID(), fs.shared, wire.Message{Time: fs.now().UnixMilli(), Body: body})
}

func (fs *fakeServer) deliver(body wire.Body) bool {
	return fs.client.HandleFrame(fs.frame(body), serverAddr)
}

// drain drops what the client sent so far (retransmits of a slow run).
func (fs *fakeServer) drain() {
	for {
		select {
		case <-fs.sent:
		default:
			return
		}
	}
}

// nextRegister returns the next Register that satisfies ok, skipping others
// (retransmits already queued).
func (fs *fakeServer) nextRegister(ok func(*wire.Register) bool) *wire.Register {
	fs.t.Helper()
	for range 20 {
		if r, is := fs.next().Body.(*wire.Register); is && ok(r) {
			return r
		}
	}
	fs.t.Fatal("no matching register among 20 sends")
	return nil
}

func (fs *fakeServer) next() wire.Message {
	fs.t.Helper()
	select {
	case m := <-fs.sent:
		return m
	case <-time.After(5 * time.Second):
		fs.t.Fatal("client sent nothing within 5 s")
		return wire.Message{}
	}
}

func TestRegisterChallengeRefresh(t *testing.T) {
	fs := newFake(t, func(c *Config) {
		c.Candidates = func() []netip.AddrPort { return []netip.AddrPort{netip.MustParseAddrPort("100.64.0.2:5000")} }
		c.NAT = func() wire.NAT { return wire.NATEndpointIndep }
		c.Tickets = func() [][]byte { return [][]byte{{1, 2, 3}} }
		c.Token = []byte("tok")
		c.Retransmit = 300 * time.Millisecond
		c.MaxBackoff = 600 * time.Millisecond
	})
	var regs []wire.Registered
	var mu sync.Mutex
	fs.client.cfg.OnRegistered = func(r wire.Registered) { mu.Lock(); regs = append(regs, r); mu.Unlock() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- fs.client.Run(ctx) }()

	r1, ok := fs.next().Body.(*wire.Register)
	if !ok || r1.Cookie != (crypto.Cookie{}) || len(r1.Candidates) != 1 || r1.NAT != wire.NATEndpointIndep || string(r1.Token) != "tok" || !r1.AllowAny {
		t.Fatalf("first register %+v", r1)
	}
	cookie := crypto.Cookie{1, 2, 3}
	if !fs.deliver(&wire.Challenge{Cookie: cookie, For: wire.MsgRegister}) {
		t.Fatal("challenge not consumed")
	}
	fs.nextRegister(func(r *wire.Register) bool { return r.Cookie == cookie })
	fs.deliver(&wire.Registered{Reflexive: netip.MustParseAddrPort("203.0.113.4:999"), TTL: 3, Refresh: 1, Instance: "i1", Relays: []string{"r:1"}})
	st := fs.client.Status()
	if !st.Registered || st.Reflexive.Port() != 999 || st.Instance != "i1" || st.Refresh != time.Second || st.LastError != "" {
		t.Fatalf("status %+v", st)
	}
	// The refresh comes after Refresh (1 s), with the cached cookie.
	time.Sleep(50 * time.Millisecond)
	fs.drain()
	start := time.Now()
	r3, ok := fs.next().Body.(*wire.Register)
	if el := time.Since(start); !ok || r3.Cookie != cookie || el < 700*time.Millisecond {
		t.Fatalf("refresh %+v after %v, want one about 1 s after registering, with the cookie", r3, el)
	}
	// Reregister sends at once.
	fs.deliver(&wire.Registered{TTL: 3, Refresh: 60})
	time.Sleep(50 * time.Millisecond)
	fs.drain()
	fs.client.Reregister()
	start = time.Now()
	if _, ok := fs.next().Body.(*wire.Register); !ok || time.Since(start) > time.Second {
		t.Fatal("Reregister did not send at once")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(regs) != 2 {
		t.Fatalf("OnRegistered called %d times, want 2", len(regs))
	}
}

func TestRegisterRetransmitsWithBackoff(t *testing.T) {
	fs := newFake(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go fs.client.Run(ctx)
	var times []time.Time
	for range 5 {
		fs.next()
		times = append(times, time.Now())
	}
	if gap := times[4].Sub(times[3]); gap < 30*time.Millisecond {
		t.Fatalf("gap %v between late retransmits: no backoff", gap)
	}
	if !strings.Contains(fs.client.Status().LastError, "no answer") {
		t.Fatalf("LastError %q", fs.client.Status().LastError)
	}
	// A challenge loop cannot make it send without pause: one immediate
	// answer per round.
	for range 5 {
		fs.deliver(&wire.Challenge{For: wire.MsgRegister})
	}
	n := 0
	for {
		select {
		case <-fs.sent:
			n++
			continue
		case <-time.After(10 * time.Millisecond):
		}
		break
	}
	if n > 2 {
		t.Fatalf("%d registers sent in reply to 5 challenges at once", n)
	}
}

func TestConnect(t *testing.T) {
	fs := newFake(t, nil)
	ctx := context.Background()
	peerID, _ := crypto.GenerateIdentity(nil)
	type res struct {
		r   wire.ConnectReply
		err error
	}
	out := make(chan res, 1)
	go func() {
		r, err := fs.client.Connect(ctx, peerID.ID().OverlayAddr().String())
		out <- res{r, err}
	}()
	c1, ok := fs.next().Body.(*wire.Connect)
	if !ok || c1.TargetAddr != peerID.ID().OverlayAddr() || !c1.Target.IsZero() {
		t.Fatalf("connect %+v", c1)
	}
	fs.deliver(&wire.Challenge{Cookie: crypto.Cookie{7}, For: wire.MsgConnect})
	c2 := fs.next().Body.(*wire.Connect)
	if c2.Cookie != (crypto.Cookie{7}) || c2.TxID != c1.TxID {
		t.Fatalf("after challenge %+v", c2)
	}
	fs.deliver(&wire.ConnectReply{TxID: c1.TxID + 1, Found: true}) // someone else's
	fs.deliver(&wire.ConnectReply{TxID: c1.TxID, Found: true, Peer: wire.PeerInfo{ID: peerID.ID()}, Start: 5})
	r := <-out
	if r.err != nil || r.r.Peer.ID != peerID.ID() || r.r.Start != 5 {
		t.Fatalf("reply %+v, %v", r.r, r.err)
	}

	go func() {
		_, err := fs.client.ConnectPeer(ctx, peerID.ID())
		out <- res{err: err}
	}()
	c3 := fs.next().Body.(*wire.Connect)
	fs.deliver(&wire.ConnectReply{TxID: c3.TxID})
	if r := <-out; !errors.Is(r.err, ErrPeerNotFound) {
		t.Fatalf("not found: %v", r.err)
	}
}

func TestConnectGivesUp(t *testing.T) {
	fs := newFake(t, func(c *Config) { c.ConnectTries = 3 })
	peerID, _ := crypto.GenerateIdentity(nil)
	_, err := fs.client.ConnectPeer(context.Background(), peerID.ID())
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("err %v, want ErrNoAnswer", err)
	}
	if n := len(fs.sent); n != 3 {
		t.Fatalf("%d sends, want 3", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := fs.client.ConnectPeer(ctx, peerID.ID()); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestNotRegisteredTriggersRegister(t *testing.T) {
	fs := newFake(t, nil)
	fs.deliver(&wire.Error{Code: wire.ErrCodeNotRegistered, For: wire.MsgConnect})
	select {
	case <-fs.client.kick:
	default:
		t.Fatal("NotRegistered did not ask Run to register")
	}
	if fs.client.Status().LastError == "" {
		t.Fatal("no LastError")
	}
}

func TestHandleFrameFilters(t *testing.T) {
	fs := newFake(t, func(c *Config) { c.AllowAny = false })
	friend, _ := crypto.GenerateIdentity(nil)
	fs.client.cfg.Allowed = []crypto.PeerID{friend.ID()}
	var punches []wire.Punch
	fs.client.cfg.OnPunch = func(p wire.Punch) { punches = append(punches, p) }

	// Not sealed, or sealed by someone else: not ours.
	if fs.client.HandleFrame(wire.AppendData(nil, 1, []byte("x")), serverAddr) {
		t.Fatal("consumed a data frame")
	}
	other, _ := crypto.GenerateIdentity(nil)
	k, _ := other.SharedKey(fs.client.me)
	if fs.client.HandleFrame(wire.SealFrame(nil, other.ID(), k, wire.Message{Time: time.Now().UnixMilli(), Body: &wire.Punch{}}), serverAddr) {
		t.Fatal("consumed a frame from another key")
	}
	// Claims the server key but does not open: consumed, dropped.
	forged := wire.SealFrame(nil, fs.id.ID(), k, wire.Message{Time: time.Now().UnixMilli(), Body: &wire.Punch{Peer: wire.PeerInfo{ID: friend.ID()}}})
	if !fs.client.HandleFrame(forged, serverAddr) || len(punches) != 0 {
		t.Fatal("forged server frame not dropped")
	}
	// Policy: a punch from a stranger is dropped, from a friend passed on.
	fs.deliver(&wire.Punch{Peer: wire.PeerInfo{ID: other.ID()}})
	pkt := fs.frame(&wire.Punch{TxID: 3, Peer: wire.PeerInfo{ID: friend.ID()}})
	fs.client.HandleFrame(pkt, serverAddr)
	if len(punches) != 1 || punches[0].TxID != 3 {
		t.Fatalf("punches %+v", punches)
	}
	// Replayed and stale frames are dropped.
	fs.client.HandleFrame(pkt, serverAddr)
	fs.now = func() time.Time { return time.Now().Add(-time.Minute) }
	fs.deliver(&wire.Punch{TxID: 4, Peer: wire.PeerInfo{ID: friend.ID()}})
	if len(punches) != 1 {
		t.Fatalf("replayed or stale punch passed: %+v", punches)
	}
}

func TestParseServer(t *testing.T) {
	id, _ := crypto.GenerateIdentity(nil)
	s := id.ID().String()
	ap, got, err := ParseServer("127.0.0.1:3478#" + s)
	if err != nil || got != id.ID() || ap != netip.MustParseAddrPort("127.0.0.1:3478") {
		t.Fatalf("%v %v %v", ap, got, err)
	}
	ap, _, err = ParseServer("[::1]:3478#" + strings.ToUpper(s))
	if err != nil || ap != netip.MustParseAddrPort("[::1]:3478") {
		t.Fatalf("v6: %v %v", ap, err)
	}
	if ap, _, err = ParseServer("localhost:3478#" + s); err != nil || !ap.Addr().IsLoopback() {
		t.Fatalf("localhost: %v %v", ap, err)
	}
	for _, bad := range []string{"", "127.0.0.1:3478", "127.0.0.1#" + s, "127.0.0.1:3478#abc", ":3478#" + s, "127.0.0.1:3478#" + s + "x"} {
		_, _, err := ParseServer(bad)
		if !errors.Is(err, ErrBadServer) || !strings.Contains(err.Error(), "host:port#<server-peer-id>") {
			t.Errorf("%q: %v", bad, err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: multi-line error", bad)
		}
	}
}

func TestParseTarget(t *testing.T) {
	id, _ := crypto.GenerateIdentity(nil)
	if tg, err := parseTarget(id.ID().String()); err != nil || tg.id != id.ID() {
		t.Fatal(tg, err)
	}
	if tg, err := parseTarget("[" + id.ID().OverlayAddr().String() + "]"); err != nil || tg.addr != id.ID().OverlayAddr() {
		t.Fatal(tg, err)
	}
	for _, bad := range []string{"", "2001:db8::1", "10.0.0.1", "abc"} {
		if _, err := parseTarget(bad); !errors.Is(err, ErrBadTarget) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	id, _ := crypto.GenerateIdentity(nil)
	send := func([]byte, netip.AddrPort) error { return nil }
	for name, c := range map[string]Config{
		"identity": {Server: serverAddr, ServerKey: id.ID(), Send: send},
		"server":   {Identity: id, ServerKey: id.ID(), Send: send},
		"key":      {Identity: id, Server: serverAddr, Send: send},
		"send":     {Identity: id, Server: serverAddr, ServerKey: id.ID()},
		"badkey":   {Identity: id, Server: serverAddr, ServerKey: crypto.PeerID{0xff, 0xff}, Send: send},
	} {
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestRegisterStampsIncrease: the server stores a Register only over one
// with an earlier send time, so Registers sent within one millisecond (a
// Reregister right after a round began; a clock that stands still) carry
// increasing stamps; other messages keep the clock's.
func TestRegisterStampsIncrease(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	fs := newFake(t, func(c *Config) { c.Now = func() time.Time { return at } })
	var last int64
	for i := range 3 {
		if err := fs.client.sendRegister(); err != nil {
			t.Fatal(err)
		}
		m := fs.next()
		if _, ok := m.Body.(*wire.Register); !ok {
			t.Fatalf("sent %T, want a Register", m.Body)
		}
		if i > 0 && m.Time <= last {
			t.Fatalf("Register %d stamped %d after one stamped %d", i, m.Time, last)
		}
		last = m.Time
	}
	if err := fs.client.send(&wire.Keepalive{}); err != nil {
		t.Fatal(err)
	}
	if m := fs.next(); m.Time != at.UnixMilli() {
		t.Fatalf("Keepalive stamped %d, want the clock's %d", m.Time, at.UnixMilli())
	}
}
