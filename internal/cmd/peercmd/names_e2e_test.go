package peercmd

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/daemon"
	"github.com/keymesh/keymesh/internal/testutil/ci"
)

// freeUDPAddr returns a loopback UDP address with a port free a moment ago.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// TestE2ENamesAndPortPolicy: b calls itself web and lets a reach only its
// service port. a names b web in its allow rule and reaches
// http://web.keymesh through its SOCKS5 proxy and its DNS server; c, whose
// configuration names nobody, cannot resolve web.keymesh although b calls
// itself so. a's stream to a port b does not allow is refused, and b logs
// and counts it.
func TestE2ENamesAndPortPolicy(t *testing.T) {
	if testing.Short() {
		ci.Skip(t, "end-to-end test: starts processes")
	}
	m := newMesh(t)
	a, b := m.keygen("a"), m.keygen("b")
	c := m.keygen("c")

	svc := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "web says %s", r.URL.Path)
	})}
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go svc.Serve(sl)
	defer svc.Close()
	svcPort := sl.Addr().(*net.TCPAddr).Port

	socksA, socksC, dnsA := freeTCPAddr(t), freeTCPAddr(t), freeUDPAddr(t)
	names := filepath.Join(m.dir, "names")
	if err := os.WriteFile(names, []byte("# c's names file names a, not web\nalpha "+a+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pb := m.up("b", "--name", "web", "--allow", fmt.Sprintf("%s:%d", a, svcPort), "--allow", c, "--expose", fmt.Sprint(svcPort))
	m.up("a", "--allow", "web="+b, "--socks5", socksA, "--dns", dnsA)
	// c takes its key from the environment, as the Kubernetes sidecar does.
	pem, err := os.ReadFile(m.key("c"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PEER_C_KEY", string(pem))
	os.Remove(m.key("c"))
	m.up("c", "--key-env", "PEER_C_KEY", "--names-file", names, "--socks5", socksC)
	if _, err := os.Stat(m.key("c")); err == nil {
		t.Error("peer up --key-env made a key file")
	}

	get := func(socks, u string) (string, error) {
		proxy, _ := url.Parse("socks5://" + socks)
		hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxy)}}
		resp, err := hc.Get(u)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return string(body), err
	}

	t.Run("a reaches web.keymesh through its SOCKS5 proxy", func(t *testing.T) {
		body, err := get(socksA, fmt.Sprintf("http://web.keymesh:%d/hi", svcPort))
		if err != nil || body != "web says /hi" {
			t.Fatalf("GET web.keymesh via a: %q, %v", body, err)
		}
	})

	t.Run("a's DNS server resolves web.keymesh to b", func(t *testing.T) {
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", dnsA)
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		addrs, err := r.LookupNetIP(ctx, "ip6", "web.keymesh")
		if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr(mustOverlay(t, b)) {
			t.Fatalf("web.keymesh at a's DNS: %v, %v; want %s", addrs, err, mustOverlay(t, b))
		}
		if _, err := r.LookupNetIP(ctx, "ip6", "example.com"); err == nil {
			t.Error("a's DNS server answered for example.com")
		}
	})

	t.Run("c's configuration does not name web: unresolved", func(t *testing.T) {
		if body, err := get(socksC, fmt.Sprintf("http://web.keymesh:%d/hi", svcPort)); err == nil {
			t.Fatalf("c reached web.keymesh, which only b's own configuration names: %q", body)
		}
		code, _, errs := m.peer("c", "ping", "web.keymesh", "--count", "1")
		if code == 0 || !strings.Contains(errs, "unknown keymesh name") {
			t.Errorf("c: peer ping web.keymesh: exit %d, %q", code, errs)
		}
		// By peer ID, c reaches b (b allows c every port).
		body, err := get(socksC, fmt.Sprintf("http://%s.keymesh:%d/id", b, svcPort))
		if err != nil || body != "web says /id" {
			t.Errorf("c to <b-id>.keymesh: %q, %v", body, err)
		}
	})

	t.Run("a stream to a port b does not allow a is refused, logged and counted", func(t *testing.T) {
		code, _, _ := peerCmd(t, 30*time.Second, strings.NewReader("hi"), "pipe", "web.keymesh", "--socket", m.socket("a"))
		if code == 0 {
			t.Error("a piped to b's port 0, which b's rule for a leaves out")
		}
		line := waitLine(t, &pb.err, "kind=tcp peer="+a+" port=0", 10*time.Second)
		if !strings.Contains(line, "policy refused a flow") {
			t.Errorf("b's refusal line: %q", line)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		metrics, err := (&daemon.Client{Socket: m.socket("b")}).Metrics(ctx)
		if err != nil || !strings.Contains(metrics, `keymesh_peer_policy_refused_total{kind="tcp"} 1`) {
			t.Errorf("b's metrics: %v\n%s", err, metrics)
		}
	})
}
