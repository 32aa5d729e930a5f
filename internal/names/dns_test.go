package names

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/keymesh/keymesh/internal/crypto"
)

func query(t testing.TB, id uint16, name string, typ dnsmessage.Type, edns bool) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	if edns {
		b.StartAdditionals()
		var rh dnsmessage.ResourceHeader
		rh.SetEDNS0(4096, dnsmessage.RCodeSuccess, false)
		b.OPTResource(rh, dnsmessage.OPTResource{Options: []dnsmessage.Option{{Code: 10, Data: make([]byte, 200)}}})
	}
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func testTable(t testing.TB) (*Table, crypto.PeerID) {
	web := peer(t, 1)
	tab, err := NewTable("", map[string]crypto.PeerID{"web": web})
	if err != nil {
		t.Fatal(err)
	}
	return tab, web
}

func parse(t *testing.T, resp []byte) (dnsmessage.Message, bool) {
	t.Helper()
	var m dnsmessage.Message
	if resp == nil {
		return m, false
	}
	if err := m.Unpack(resp); err != nil {
		t.Fatalf("answer does not parse: %v", err)
	}
	return m, true
}

func TestAnswer(t *testing.T) {
	tab, web := testTable(t)
	other := peer(t, 9)
	for _, tc := range []struct {
		name  string
		typ   dnsmessage.Type
		rcode dnsmessage.RCode
		addr  netip.Addr // the AAAA answer, if any
	}{
		{"web.keymesh.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, web.OverlayAddr()},
		{"WeB.KeyMesh.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, web.OverlayAddr()},
		{other.String() + ".keymesh.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, other.OverlayAddr()},
		{"web.keymesh.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, netip.Addr{}},
		{"web.keymesh.", dnsmessage.TypeALL, dnsmessage.RCodeRefused, netip.Addr{}},
		{"nobody.keymesh.", dnsmessage.TypeAAAA, dnsmessage.RCodeNameError, netip.Addr{}},
		{"example.com.", dnsmessage.TypeAAAA, dnsmessage.RCodeRefused, netip.Addr{}},
		{"example.com.", dnsmessage.TypeALL, dnsmessage.RCodeRefused, netip.Addr{}},
	} {
		for _, edns := range []bool{false, true} {
			q := query(t, 0x1234, tc.name, tc.typ, edns)
			m, ok := parse(t, Answer(tab, q))
			if !ok {
				t.Fatalf("%s %v: no answer", tc.name, tc.typ)
			}
			if !m.Header.Response || m.Header.ID != 0x1234 || m.Header.RCode != tc.rcode {
				t.Errorf("%s %v: header %+v, want response 0x1234 %v", tc.name, tc.typ, m.Header, tc.rcode)
			}
			if len(m.Questions) != 1 || m.Questions[0].Name.String() != tc.name {
				t.Errorf("%s %v: questions %v", tc.name, tc.typ, m.Questions)
			}
			if len(m.Additionals) != 0 || len(m.Authorities) != 0 {
				t.Errorf("%s %v: echoed other sections: %v %v", tc.name, tc.typ, m.Authorities, m.Additionals)
			}
			want := 0
			if tc.addr.IsValid() {
				want = 1
			}
			if len(m.Answers) != want {
				t.Fatalf("%s %v: %d answers, want %d", tc.name, tc.typ, len(m.Answers), want)
			}
			if want == 1 {
				aaaa, ok := m.Answers[0].Body.(*dnsmessage.AAAAResource)
				if !ok || netip.AddrFrom16(aaaa.AAAA) != tc.addr || m.Answers[0].Header.TTL != TTL {
					t.Errorf("%s: answer %v, want %s", tc.name, m.Answers[0], tc.addr)
				}
			}
		}
	}
}

// TestAnswerNoAmplification: no answer is larger than its query plus one
// AAAA record, and a query carrying big EDNS options gets a smaller answer.
func TestAnswerNoAmplification(t *testing.T) {
	tab, _ := testTable(t)
	q := query(t, 1, "web.keymesh.", dnsmessage.TypeAAAA, false)
	resp := Answer(tab, q)
	if len(resp) > len(q)+MaxGrowth {
		t.Errorf("answer of %d bytes to a query of %d", len(resp), len(q))
	}
	q = query(t, 1, "web.keymesh.", dnsmessage.TypeAAAA, true)
	if resp := Answer(tab, q); len(resp) >= len(q) {
		t.Errorf("answer of %d bytes to a query of %d with EDNS padding", len(resp), len(q))
	}
}

func TestAnswerDropsAndErrors(t *testing.T) {
	tab, _ := testTable(t)
	// A response is never answered (no loops between two servers, no reflection).
	q := query(t, 7, "web.keymesh.", dnsmessage.TypeAAAA, false)
	q[2] |= 0x80
	if resp := Answer(tab, q); resp != nil {
		t.Errorf("answered a response: %x", resp)
	}
	// Too short for a header.
	if resp := Answer(tab, []byte{1, 2, 3}); resp != nil {
		t.Errorf("answered 3 bytes: %x", resp)
	}
	// Another opcode: NOTIMP.
	q = query(t, 7, "web.keymesh.", dnsmessage.TypeAAAA, false)
	q[2] |= 2 << 3 // STATUS
	if m, _ := parse(t, Answer(tab, q)); m.Header.RCode != dnsmessage.RCodeNotImplemented {
		t.Errorf("opcode 2: %v", m.Header.RCode)
	}
	// Two questions: FORMERR.
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 8})
	b.StartQuestions()
	for range 2 {
		b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("web.keymesh."), Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET})
	}
	q, _ = b.Finish()
	if m, _ := parse(t, Answer(tab, q)); m.Header.RCode != dnsmessage.RCodeFormatError || len(m.Answers) != 0 {
		t.Errorf("two questions: %v, %d answers", m.Header.RCode, len(m.Answers))
	}
	// No question: FORMERR.
	if m, _ := parse(t, Answer(tab, make([]byte, 12))); m.Header.RCode != dnsmessage.RCodeFormatError {
		t.Errorf("no question: %v", m.Header.RCode)
	}
}

// TestServeOverUDP runs the server on a loopback socket and asks it.
func TestServeOverUDP(t *testing.T) {
	tab, web := testTable(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := ListenDNS(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- (&Server{Table: tab}).Serve(ctx, pc) }()

	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(query(t, 42, "web.keymesh.", dnsmessage.TypeAAAA, false)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := parse(t, buf[:n])
	if len(m.Answers) != 1 || netip.AddrFrom16(m.Answers[0].Body.(*dnsmessage.AAAAResource).AAAA) != web.OverlayAddr() {
		t.Fatalf("answer %v", m.Answers)
	}
	// The Go resolver, pointed at the server, resolves the name too.
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
	addrs, err := r.LookupNetIP(ctx, "ip6", "web.keymesh")
	if err != nil || len(addrs) != 1 || addrs[0] != web.OverlayAddr() {
		t.Fatalf("net.Resolver: %v, %v", addrs, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestListenDNSLocalOnly(t *testing.T) {
	ctx := context.Background()
	for _, a := range []string{"0.0.0.0:0", "[::]:0", "192.0.2.1:53", "[2001:db8::1]:53"} {
		if pc, err := ListenDNS(ctx, a); !errors.Is(err, ErrNotLocal) {
			if pc != nil {
				pc.Close()
			}
			t.Errorf("ListenDNS(%s): %v, want ErrNotLocal", a, err)
		}
	}
	for _, a := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"), peer(t, 1).OverlayAddr()} {
		if !localSource(a) {
			t.Errorf("%s is not a local source", a)
		}
	}
	for _, a := range []string{"192.0.2.1", "2001:db8::1", "10.0.0.1", "fe80::1"} {
		if localSource(netip.MustParseAddr(a)) {
			t.Errorf("%s is a local source", a)
		}
	}
}

// FuzzAnswer: any input gets no answer or a well-formed response to it, no
// larger than the input plus one AAAA record.
func FuzzAnswer(f *testing.F) {
	tab, _ := testTable(f)
	for _, typ := range []dnsmessage.Type{dnsmessage.TypeAAAA, dnsmessage.TypeA, dnsmessage.TypeALL, dnsmessage.TypeTXT} {
		f.Add(query(f, 1, "web.keymesh.", typ, false))
		f.Add(query(f, 2, "nobody.keymesh.", typ, true))
		f.Add(query(f, 3, "example.org.", typ, false))
	}
	f.Add(query(f, 4, peer(f, 5).String()+".keymesh.", dnsmessage.TypeAAAA, false))
	f.Add([]byte{})
	f.Add(make([]byte, 12))
	// A question whose name is a compression pointer into the header.
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x00, 0, 28, 0, 1})
	f.Fuzz(func(t *testing.T, q []byte) {
		resp := Answer(tab, q)
		if resp == nil {
			return
		}
		if len(resp) > len(q)+MaxGrowth || len(resp) > maxAnswer {
			t.Fatalf("answer of %d bytes to %d", len(resp), len(q))
		}
		var p dnsmessage.Parser
		h, err := p.Start(resp)
		if err != nil || !h.Response {
			t.Fatalf("answer is not a response: %+v %v", h, err)
		}
		if qh, _ := new(dnsmessage.Parser).Start(q); qh.Response || qh.ID != h.ID {
			t.Fatalf("answered %+v with %+v", qh, h)
		}
	})
}
