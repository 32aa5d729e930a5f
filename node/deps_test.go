package node

import (
	"os/exec"
	"strings"
	"testing"
)

// serverPackages are the packages a peer must never link: the servers, what
// only servers share (obs: admin HTTP, metrics), and the Prometheus client.
// Each protocol has a client package for the peer (relayclient,
// streamclient, rzclient); the servers sit on top of those.
var serverPackages = []string{
	"github.com/keymesh/keymesh/internal/relay",
	"github.com/keymesh/keymesh/internal/streamrelay",
	"github.com/keymesh/keymesh/internal/rendezvous",
	"github.com/keymesh/keymesh/internal/turnrelay",
	"github.com/keymesh/keymesh/internal/mesh",
	"github.com/keymesh/keymesh/internal/obs",
	"github.com/keymesh/keymesh/internal/discovery",
	"github.com/prometheus/",
}

// TestNodeLinksNoServer fails when `go list -deps` of this package contains
// a server package or the Prometheus client.
func TestNodeLinksNoServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps printed %d packages; want the whole tree", len(deps))
	}
	for _, d := range deps {
		for _, s := range serverPackages {
			if d == s || strings.HasPrefix(d, s+"/") || (strings.HasSuffix(s, "/") && strings.HasPrefix(d, s)) {
				t.Errorf("node links %s (server side: %s)", d, s)
			}
		}
	}
}
