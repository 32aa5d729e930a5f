package turnrelay

import (
	"context"
	"encoding/hex"
	"net"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/testutil/coturn"
	"github.com/keymesh/keymesh/internal/testutil/debpkg"
	"github.com/pion/stun/v4"
)

// chromeAllocate is the first Allocate of a Chrome of 2018 (with the ORIGIN
// attribute later versions dropped), from pion/turn's
// internal/proto/testdata/01_chromeallocreq.hex (CC0-1.0).
const chromeAllocate = "000300242112a442626b4a6849664c3630526863802f0016687474703a2f2f6c6f63616c686f73743a333030302f00000019000411000000"

// unauthMessages returns one of each kind of message a stranger can send
// without credentials, by name. extra adds captured ones.
func unauthMessages(t *testing.T, extra map[string][]byte) map[string][]byte {
	t.Helper()
	req := func(method stun.Method, attrs ...stun.Setter) []byte {
		s := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
		return stun.MustBuild(s...).Raw
	}
	ind := func(method stun.Method, attrs ...stun.Setter) []byte {
		s := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassIndication)}, attrs...)
		return stun.MustBuild(s...).Raw
	}
	peer := peerAddr(&net.UDPAddr{IP: net.IPv4(203, 0, 113, 5), Port: 9})
	chrome, err := hex.DecodeString(chromeAllocate)
	if err != nil {
		t.Fatal(err)
	}
	msgs := map[string][]byte{
		"binding":                req(stun.MethodBinding),
		"binding+fingerprint":    req(stun.MethodBinding, stun.Fingerprint),
		"binding indication":     ind(stun.MethodBinding),
		"allocate bare":          req(stun.MethodAllocate),
		"allocate browser-like":  req(stun.MethodAllocate, requestedTransport(17)),
		"allocate tcp":           req(stun.MethodAllocate, requestedTransport(6)),
		"allocate chrome 2018":   chrome,
		"allocate bad integrity": req(stun.MethodAllocate, requestedTransport(17), stun.NewUsername("1:x"), stun.NewShortTermIntegrity("x")),
		"allocate forged nonce": req(stun.MethodAllocate, requestedTransport(17), stun.NewUsername("1:x"),
			stun.NewRealm(testRealm), stun.NewNonce("forged"), stun.NewShortTermIntegrity("x")),
		"refresh":           req(stun.MethodRefresh),
		"create permission": req(stun.MethodCreatePermission, peer),
		"channel bind":      req(stun.MethodChannelBind, channelNumber(0x4000), peer),
		"connect":           req(stun.MethodConnect, peer),
		"connection bind":   req(stun.MethodConnectionBind, stun.RawAttribute{Type: stun.AttrConnectionID, Value: []byte{0, 0, 0, 1}}),
		"send indication":   ind(stun.MethodSend, peer, stun.RawAttribute{Type: stun.AttrData, Value: []byte("x")}),
		"unknown method":    req(stun.Method(0x0abc)),
		"success response":  stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw,
		"channel data":      {0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4},
		"garbage":           []byte("GET / HTTP/1.1\r\n\r\n"),
	}
	for k, v := range extra {
		msgs[k] = v
	}
	return msgs
}

// sentinelNow is the clock guardedServer's server stands still at.
var sentinelNow = time.Unix(1_800_000_000, 0)

// sentinel is answered by a 438 smaller than itself, always: a request
// whose MESSAGE-INTEGRITY verifies (the guard drops those that do not,
// unanswered), with a long forged nonce.
func sentinel() *stun.Message {
	user, pass := crypto.TURNCredentials(testSecret, "sentinel", time.Hour, sentinelNow)
	return stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.NewUsername(user), stun.NewRealm(DefaultRealm), stun.NewNonce(strings.Repeat("forged", 20)),
		stun.NewLongTermIntegrity(user, DefaultRealm, pass))
}

// withTxID returns b with a fresh transaction ID when it is a STUN message,
// so each copy is a new request.
func withTxID(b []byte) []byte {
	b = append([]byte(nil), b...)
	if parseSTUN(b).ok {
		id := stun.NewTransactionID()
		copy(b[8:20], id[:])
	}
	return b
}

// uclientFirstAllocate runs turnutils_uclient against a plain UDP socket and
// returns the first datagram it sends: its first Allocate, unauthenticated.
func uclientFirstAllocate(t *testing.T) []byte {
	t.Helper()
	debpkg.Require(t, coturn.ClientProgram, coturn.Package)
	sink, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := coturn.StartClient(ctx, coturn.ClientConfig{
		Server: netip.MustParseAddrPort(sink.LocalAddr().String()),
		Peer:   netip.MustParseAddrPort("203.0.113.5:9"),
		User:   "measure", Secret: "measure-secret-0123456789",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	buf := make([]byte, 2048)
	for {
		sink.SetReadDeadline(time.Now().Add(15 * time.Second))
		n, _, err := sink.ReadFrom(buf)
		if err != nil {
			t.Fatalf("turnutils_uclient sent nothing: %v; output: %s", err, p.Output())
		}
		if m := parseSTUN(buf[:n]); m.ok && m.method() == methodAllocate && m.class() == classRequest {
			pm := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if err := pm.Decode(); err == nil {
				t.Logf("turnutils_uclient's first Allocate, %d bytes: %v", n, pm.Attributes)
			}
			return pm.Raw
		}
	}
}

// guardedServer starts a server with default limits and a stopped clock on
// addr and returns a raw client of it.
func guardedServer(t *testing.T, network, addr string) *rawClient {
	t.Helper()
	now := sentinelNow
	conn, err := net.ListenPacket(network, addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{
		PacketConns: []net.PacketConn{conn}, Secret: testSecret, Realm: DefaultRealm,
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return dialRaw(t, network, conn.LocalAddr().String(), "", "")
}

// TestNoUnauthenticatedReplyLargerThanRequest is the reflection attack: a
// stranger spoofing a victim's address sends every message it can make
// without credentials, many times, to the TURN port over IPv4 and IPv6, and
// the server must never answer with more bytes than it got, except STUN
// Binding answers and 401/438 challenges, each within its per-source burst
// (the clock stands still, so nothing refills). The old server answered
// every unauthenticated Allocate with a 72-byte 401, 3.6 times a bare
// 20-byte request, without limit.
func TestNoUnauthenticatedReplyLargerThanRequest(t *testing.T) {
	extra := map[string][]byte{"allocate turnutils_uclient": uclientFirstAllocate(t)}
	const copies = 30
	for _, fam := range []struct{ network, addr string }{{"udp4", "127.0.0.1"}, {"udp6", "[::1]"}} {
		t.Run(fam.network, func(t *testing.T) {
			msgs := unauthMessages(t, extra)
			names := make([]string, 0, len(msgs))
			for name := range msgs {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				// A fresh server for each kind, so each one's first answer
				// is seen before another kind spends the source's burst.
				msg := msgs[name]
				c := guardedServer(t, fam.network, fam.addr)
				var oversizeBinding, oversizeChallenge, inBytes, outBytes int
				replies, firstReply := 0, 0
				for range copies {
					req := withTxID(msg)
					c.send(req)
					inBytes += len(req)
					sent := sentinel()
					c.send(sent.Raw)
					inBytes += len(sent.Raw)
					for {
						b, err := c.read(5 * time.Second)
						if err != nil {
							t.Fatalf("%s: no answer to the sentinel: %v", name, err)
						}
						outBytes += len(b)
						m := parseSTUN(b)
						if m.ok && m.txid == sent.TransactionID {
							if len(b) > len(sent.Raw) {
								t.Fatalf("sentinel answer %d bytes > %d", len(b), len(sent.Raw))
							}
							break
						}
						replies++
						if firstReply == 0 {
							firstReply = len(b)
						}
						if len(b) <= len(req) {
							continue
						}
						switch code := errorCode(b); {
						case m.ok && m.method() == methodBinding && m.class() == classSuccess:
							oversizeBinding++
						case m.ok && m.class() == classError && (code == codeUnauthorized || code == codeStaleNonce):
							oversizeChallenge++
						default:
							t.Errorf("%s: %d-byte request answered with %d bytes (%x)", name, len(req), len(b), b)
						}
					}
				}
				t.Logf("%-27s request %3d B, first answer %3d B (%.2fx); %d copies: %d answers, %d B in, %d B out (with sentinels)",
					name, len(msg), firstReply, float64(firstReply)/float64(len(msg)), copies, replies, inBytes, outBytes)
				if oversizeBinding > DefaultBindingBurst {
					t.Errorf("%s: %d Binding answers from one source with the clock stopped, burst %d", name, oversizeBinding, DefaultBindingBurst)
				}
				if oversizeChallenge > DefaultChallengeBurst {
					t.Errorf("%s: %d oversize challenges from one source with the clock stopped, burst %d", name, oversizeChallenge, DefaultChallengeBurst)
				}
				if outBytes > inBytes {
					t.Errorf("%s: the server sent %d bytes for %d received", name, outBytes, inBytes)
				}
			}
		})
	}
}
