//go:build linux

package streamrelay

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/addrpolicy"
	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/internal/streamclient"
	"github.com/keymesh/keymesh/internal/testutil/ci"
)

// TestLabRelayReachesOnlyTheInternet is the open-proxy attack with real
// sockets: the relay runs in a network namespace whose routes lead only to
// namespaces this test makes: a "metadata" host at 169.254.169.254, a
// "private" host at 10.77.0.2, and the lab internet (203.0.113.0/24), where
// the attacker's client lives. A fresh key opens a tunnel and sends to the
// metadata service, the private host, the relay's own loopback and its own
// address (a port that is not a keymesh service): nothing arrives, while a
// datagram to the lab internet does. The same lab with the ranges allowed
// delivers all of them, so it is the policy that stops them.
func TestLabRelayReachesOnlyTheInternet(t *testing.T) {
	lab := newNetnsLab(t)
	relay, meta, priv, inet := lab.ns("relay"), lab.ns("meta"), lab.ns("priv"), lab.ns("inet")
	lab.link(relay, "rm", "169.254.0.1/16", meta, "m0", "169.254.169.254/16")
	lab.link(relay, "rp", "10.77.0.1/24", priv, "p0", "10.77.0.2/24")
	lab.link(relay, "ri", "203.0.113.1/24", inet, "i0", "203.0.113.2/24")

	targets := map[string]*nsRecorder{
		"metadata": lab.recorder(meta, "169.254.169.254:80"),
		"private":  lab.recorder(priv, "10.77.0.2:53"),
		"loopback": lab.recorder(relay, "127.0.0.1:5353"),
		"own":      lab.recorder(relay, "203.0.113.1:6379"),
	}
	internet := lab.recorder(inet, "203.0.113.2:4000")

	for _, allowed := range []bool{false, true} {
		t.Run(fmt.Sprintf("allowed=%v", allowed), func(t *testing.T) {
			cfg := Config{PresenceIP: netip.MustParseAddr("203.0.113.1"), Registerer: prometheus.NewRegistry()}
			if allowed {
				cfg.AllowDestinations, _ = addrpolicy.ParsePrefixes("169.254.0.0/16,10.77.0.0/24,127.0.0.0/8,203.0.113.1")
			}
			srv, ws, presence := lab.openTunnel(t, relay, inet, cfg)
			before := map[string]int64{}
			for name, r := range targets {
				before[name] = r.n.Load()
				if err := ws.Write(lab.ctx, websocket.MessageBinary, streamclient.AppendDatagram(nil, r.addr, []byte("attack "+name))); err != nil {
					t.Fatal(err)
				}
			}
			inBefore := internet.n.Load()
			if err := ws.Write(lab.ctx, websocket.MessageBinary, streamclient.AppendDatagram(nil, internet.addr, []byte("to a peer"))); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the datagram to the lab internet", func() bool { return internet.n.Load() > inBefore })
			if from := internet.from.Load(); from == nil || *from != presence {
				t.Fatalf("the internet host saw %v, the presence is %v", from, presence)
			}
			if !allowed {
				// The tunnel's datagrams are handled in order: all four
				// were refused before the fifth went out.
				if n := srv.dropped(dropDestDenied) + srv.dropped(dropDestOwn); n != 4 {
					t.Fatalf("%v refusals counted, want 4", n)
				}
				for name, r := range targets {
					if got := r.n.Load() - before[name]; got != 0 {
						t.Errorf("%d datagrams reached the %s host", got, name)
					}
				}
				return
			}
			for name, r := range targets {
				waitFor(t, "the allowed "+name+" host", func() bool { return r.n.Load() > before[name] })
			}
		})
	}
}

// netnsLab makes network namespaces and removes them when the test ends.
type netnsLab struct {
	t      testing.TB
	ctx    context.Context
	prefix string
}

func newNetnsLab(t testing.TB) *netnsLab {
	t.Helper()
	_, ipErr := exec.LookPath("ip")
	if os.Geteuid() != 0 || ipErr != nil {
		ci.Skipf(t, "the namespace lab needs root and iproute2 (euid %d, ip: %v)", os.Geteuid(), ipErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	b := make([]byte, 3)
	rand.Read(b)
	return &netnsLab{t: t, ctx: ctx, prefix: "ksr" + hex.EncodeToString(b)}
}

func (l *netnsLab) run(args ...string) {
	l.t.Helper()
	if out, err := exec.CommandContext(l.ctx, "ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// ns makes a namespace with its loopback up.
func (l *netnsLab) ns(name string) string {
	l.t.Helper()
	ns := l.prefix + "-" + name
	l.run("netns", "add", ns)
	l.t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	l.run("-n", ns, "link", "set", "lo", "up")
	return ns
}

// link joins two namespaces with a veth pair and addresses both ends; no
// other route is added.
func (l *netnsLab) link(nsA, devA, addrA, nsB, devB, addrB string) {
	l.t.Helper()
	l.run("-n", nsA, "link", "add", devA, "type", "veth", "peer", "name", devB, "netns", nsB)
	l.run("-n", nsA, "addr", "add", addrA, "dev", devA)
	l.run("-n", nsB, "addr", "add", addrB, "dev", devB)
	l.run("-n", nsA, "link", "set", devA, "up")
	l.run("-n", nsB, "link", "set", devB, "up")
}

// in runs fn on a thread inside ns (sockets made there stay there).
func (l *netnsLab) in(t testing.TB, ns string, fn func() error) {
	t.Helper()
	if err := inNetns(ns, fn); err != nil {
		t.Fatalf("in %s: %v", ns, err)
	}
}

// inNetns is in for goroutines other than the test's: it returns the error.
func inNetns(ns string, fn func() error) error { return natlab.InNetns(ns, fn) }

// nsRecorder counts the datagrams arriving at a UDP socket in a namespace.
type nsRecorder struct {
	addr netip.AddrPort
	n    atomic.Int64
	from atomic.Pointer[netip.AddrPort]
}

func (l *netnsLab) recorder(ns, addr string) *nsRecorder {
	l.t.Helper()
	var c *net.UDPConn
	l.in(l.t, ns, func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	})
	l.t.Cleanup(func() { c.Close() })
	return l.recorderOn(c)
}

// openTunnel starts a stream relay inside relayNS (its TLS listener and
// every presence socket there, its own addresses those of relayNS) and
// opens a tunnel with a fresh key from clientNS, speaking the protocol by
// hand as an attacker would.
func (l *netnsLab) openTunnel(t testing.TB, relayNS, clientNS string, cfg Config) (*Server, *websocket.Conn, netip.AddrPort) {
	t.Helper()
	l.in(t, relayNS, func() (err error) {
		cfg.OwnAddrs, err = addrpolicy.LocalAddrs()
		return err
	})
	cfg.ListenUDP = func(laddr netip.AddrPort) (c *net.UDPConn, err error) {
		nerr := inNetns(relayNS, func() error {
			c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(laddr))
			return nil
		})
		return c, errors.Join(nerr, err)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	relayID := ident(t)
	cert, err := relayID.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	l.in(t, relayNS, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(cfg.PresenceIP.String(), "0"))
		return err
	})
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}}))
	t.Cleanup(func() { hs.Close() })

	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: streamclient.PinnedTLS(relayID.ID()),
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			nerr := inNetns(clientNS, func() error {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return nil
			})
			return c, errors.Join(nerr, err)
		},
	}}
	ws, _, err := websocket.Dial(l.ctx, "wss://"+ln.Addr().String()+streamclient.Path, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	if err := ws.Write(l.ctx, websocket.MessageBinary, streamclient.AppendClientHello(nil, ident(t), time.Now())); err != nil {
		t.Fatal(err)
	}
	_, b, err := ws.Read(l.ctx)
	if err != nil {
		t.Fatal(err)
	}
	presence, err := streamclient.ParseServerHello(b)
	if err != nil {
		t.Fatal(err)
	}
	return srv, ws, presence
}

// BenchmarkLabFlood measures what a tunnel pointed at a third party
// delivers (a victim on the lab internet that never answers) against an
// answering peer, with the default limits. It reports the share of the
// attacker's datagrams that arrive, and the victim's bytes per second.
//
//	go test -run XXX -bench BenchmarkLabFlood -benchtime 20000x ./internal/streamrelay
func BenchmarkLabFlood(b *testing.B) {
	for _, answering := range []bool{false, true} {
		b.Run(fmt.Sprintf("answering=%v", answering), func(b *testing.B) {
			lab := newNetnsLab(b)
			relay, inet := lab.ns("relay"), lab.ns("inet")
			lab.link(relay, "ri", "203.0.113.1/24", inet, "i0", "203.0.113.2/24")
			victim := lab.recorder(inet, "203.0.113.2:4000")
			srv, ws, presence := lab.openTunnel(b, relay, inet, Config{PresenceIP: netip.MustParseAddr("203.0.113.1"), Registerer: prometheus.NewRegistry()})
			if answering {
				var c *net.UDPConn
				lab.in(b, inet, func() (err error) {
					c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("203.0.113.2:4001")), net.UDPAddrFromAddrPort(presence))
					return err
				})
				defer c.Close()
				if _, err := c.Write([]byte("hello")); err != nil {
					b.Fatal(err)
				}
				victim.addr = netip.MustParseAddrPort("203.0.113.2:4001") // the peer's address has answered
				victim = lab.recorderOn(c)
			}
			msg := streamclient.AppendDatagram(nil, victim.addr, make([]byte, 1200))
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if err := ws.Write(lab.ctx, websocket.MessageBinary, msg); err != nil {
					b.Fatal(err)
				}
			}
			waitFor(b, "every datagram handled", func() bool {
				var dropped float64
				for _, r := range []string{dropProbeRate, dropRate, dropByteRate, dropIPByteRate, dropSend} {
					dropped += srv.dropped(r)
				}
				return srv.sent()+dropped >= float64(b.N)
			})
			el := time.Since(start)
			b.StopTimer()
			got := victim.n.Load()
			b.ReportMetric(float64(got)/float64(b.N), "delivered/sent")
			b.ReportMetric(float64(got)*1200/el.Seconds(), "victim-B/s")
			b.ReportMetric(float64(b.N)*1200/el.Seconds(), "attacker-B/s")
		})
	}
}

// recorderOn counts what arrives at an open socket.
func (l *netnsLab) recorderOn(c *net.UDPConn) *nsRecorder {
	r := &nsRecorder{addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			r.from.Store(&from)
			r.n.Add(1)
		}
	}()
	return r
}
