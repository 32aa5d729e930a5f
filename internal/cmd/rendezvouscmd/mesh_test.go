package rendezvouscmd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/mesh"
)

// TestMeshAllowDropsBeforeTag: with --mesh-allow, a mesh message from an
// address outside the listed ranges, rightly tagged with the peer secret,
// is dropped as a stranger before its tag is checked; the same message from
// a listed range is accepted. The old mesh socket had no allow-list, so it
// checked the tag (an HMAC) of every stranger's message.
func TestMeshAllowDropsBeforeTag(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "peer.secret")
	secret := []byte("the peer secret of every instance\n")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := mesh.NewKey(secret[:len(secret)-1])
	if err != nil {
		t.Fatal(err)
	}
	out, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(allow string) *mesh.Node {
		t.Helper()
		p, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		addr := p.LocalAddr().String()
		p.Close()
		o := Options{MeshListen: addr, PeerSecretFile: secretFile, MeshRate: mesh.DefaultRate,
			MeshAllow: []netip.Prefix{netip.MustParsePrefix(allow)}}
		n, err := startMesh(ctx, o, out, prometheus.NewRegistry(), log)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	strict, open := start("10.0.0.0/8"), start("127.0.0.0/8")
	sc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sender, err := mesh.NewNode(mesh.Config{Key: key, Conn: sc})
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort("198.51.100.7:4000")
	for _, n := range []*mesh.Node{strict, open} {
		if _, err := sender.Send(nil, n.Addr(), mesh.KindPunch, dst, []byte{0x20, 1}); err != nil {
			t.Fatal(err)
		}
	}
	for ctx.Err() == nil {
		s, o := strict.Stats(), open.Stats()
		if s.Received >= 1 && o.Received >= 1 {
			if s.Dropped[mesh.DropStranger] != 1 || s.Dropped[mesh.DropBadTag] != 0 || s.Accepted != 0 {
				t.Fatalf("outside --mesh-allow: %+v, want one stranger dropped before its tag", s)
			}
			if o.Accepted != 1 {
				t.Fatalf("inside --mesh-allow: %+v, want the message accepted", o)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the mesh sockets received nothing")
}
