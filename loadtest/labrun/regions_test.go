package labrun

import (
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/internal/natlab"
	"github.com/keymesh/keymesh/loadtest/matrix"
)

func TestExpandArgs(t *testing.T) {
	mk := func(name, region, role, addr string) *Instance {
		return &Instance{Name: name, Region: region, Role: role, Host: &natlab.Host{Addr: netip.MustParseAddr(addr)},
			Anycast: netip.MustParseAddr("198.51.100.2"), Listen: netip.MustParseAddr(addr)}
	}
	all := []*Instance{
		mk("r1-relay", "r1", RoleRelay, "203.0.113.10"),
		mk("r1-rendezvous", "r1", RoleRendezvous, "203.0.113.11"),
		mk("r2-relay", "r2", RoleRelay, "203.0.113.12"),
		mk("r3-relay", "r3", RoleRelay, "203.0.113.14"),
	}
	l := &Lab{Instances: all, PeerSecretFile: "/k/peer.secret"}
	got := ExpandArgs("--instance {name} --mesh-listen {addr}:7946 --mesh-peers {peers:7946} --peer-secret-file {secret} --x={region}/{anycast}/{peers}", all[2], l)
	want := []string{"--instance", "r2-relay", "--mesh-listen", "203.0.113.12:7946", "--mesh-peers", "203.0.113.10:7946,203.0.113.14:7946",
		"--peer-secret-file", "/k/peer.secret", "--x=r2/198.51.100.2/203.0.113.10,203.0.113.14"}
	if !slices.Equal(got, want) {
		t.Errorf("ExpandArgs:\n got %q\nwant %q", got, want)
	}
	got = ExpandArgs("--instance {n} --mesh-peers {peermap:3490}", all[2], l)
	want = []string{"--instance", "2", "--mesh-peers", "1=203.0.113.10:3490,2=203.0.113.12:3490,3=203.0.113.14:3490"}
	if !slices.Equal(got, want) {
		t.Errorf("ExpandArgs:\n got %q\nwant %q", got, want)
	}
	if got := ExpandArgs("  ", all[0], l); len(got) != 0 {
		t.Errorf("empty template gave %q", got)
	}
	l.Redis = &natlab.Host{Addr: netip.MustParseAddr("203.0.113.20")}
	got = MeshRegistryArgs(all[2], l)
	want = []string{"--mesh-listen", "203.0.113.12:3490", "--mesh-registry", "redis://203.0.113.20:6379/0", "--peer-secret-file", "/k/peer.secret"}
	if !slices.Equal(got, want) {
		t.Errorf("MeshRegistryArgs:\n got %q\nwant %q", got, want)
	}
}

func TestGapSink(t *testing.T) {
	start := time.Now()
	g := NewGapSink(start)
	_, _ = g.Write([]byte("a"))
	time.Sleep(30 * time.Millisecond)
	mid := time.Now()
	time.Sleep(30 * time.Millisecond)
	_, _ = g.Write([]byte("bc"))
	if g.Received() != 3 {
		t.Errorf("Received = %d, want 3", g.Received())
	}
	gap, gs := g.Longest()
	after, end := g.LongestAfter(mid)
	if after != gap || !end.Equal(gs.Add(gap)) {
		t.Errorf("longest gap after %v is %v ending %v; longest %v from %v", mid, after, end, gap, gs)
	}
	if _, end := g.LongestAfter(time.Now()); !end.IsZero() {
		t.Error("a write after the last one was found")
	}
}

// TestRegions runs the real binaries in two regions behind each anycast
// model, A's site nearest region 1 and B's nearest region 2, and proves
// that each peer's flows went to its own region (each rendezvous instance
// registered a peer) and that A reaches B: under BGP anycast through a
// port-restricted NAT; behind the accelerator through a full cone without
// the instance mesh (an instance's own sends leave from its regional
// address, which address-dependent filtering drops) and through a
// port-restricted NAT with it (MeshArgs: B's Punch leaves from its home
// instance). Then region 2's instances are killed: the health checker marks
// it down and B, now served by region 1, is reached again.
func TestRegions(t *testing.T) {
	needRoot(t)
	for _, c := range []struct {
		model natlab.FrontDoor
		mesh  bool
	}{{natlab.Accelerator, false}, {natlab.Accelerator, true}, {natlab.BGP, false}} {
		model := c.model
		name := string(model)
		cfg := Config{Bins: binaries(t), Regions: 2, FrontDoor: model}
		if c.mesh {
			name += "-mesh"
			cfg.InstanceArgs = MeshArgs
		}
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t, 2*time.Minute)
			cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
			lab, err := Start(ctx, cfg)
			if err != nil {
				t.Fatalf("start the lab: %v", err)
			}
			t.Cleanup(func() {
				if t.Failed() {
					var b strings.Builder
					lab.DumpLogs(&b, 30)
					t.Logf("process logs:\n%s", b.String())
				}
				if err := lab.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			if len(lab.Instances) != 4 || lab.Redis == nil {
				t.Fatalf("%d instances, redis %v; want 4 and a Redis host", len(lab.Instances), lab.Redis)
			}
			bType := natlab.PortRestricted
			if model == natlab.Accelerator && !c.mesh {
				bType = natlab.FullCone
			}
			sa, err := lab.AddSite(ctx, "a", natlab.Public)
			if err != nil {
				t.Fatal(err)
			}
			sb, err := lab.AddSite(ctx, "b", bType)
			if err != nil {
				t.Fatal(err)
			}
			if err := lab.Home(ctx, sa, 1); err != nil {
				t.Fatal(err)
			}
			if err := lab.Home(ctx, sb, 2); err != nil {
				t.Fatal(err)
			}
			want := matrix.Expected(string(natlab.Public), string(bType))
			res := lab.RunTrial(ctx, sa.Host(), sb.Host(), TrialOptions{Name: "x", Timeout: 15 * time.Second, StopAt: want})
			if !res.Outcome.AtLeast(want) {
				t.Errorf("public (r1) -> %s (r2): %s, want %s: %v", bType, res.Outcome, want, res.Err)
			}
			for _, in := range lab.Instances {
				if in.Role != RoleRendezvous {
					continue
				}
				text, err := metricsOf(ctx, in.Host, in.AdminPort)
				if err != nil {
					t.Fatal(err)
				}
				if n := sumMetric(text, "keymesh_rendezvous_registrations_total"); n < 1 {
					t.Errorf("%s registered %v peers, want its region's peer", in.Name, n)
				}
			}

			// Region 2 dies: the health checker moves B's site to region
			// 1, where fresh daemons meet again.
			if err := lab.KillRegion("r2"); err != nil {
				t.Fatal(err)
			}
			for len(lab.HealthEvents()) == 0 {
				select {
				case <-ctx.Done():
					t.Fatalf("region r2 still marked healthy after its instances were killed")
				case <-time.After(50 * time.Millisecond):
				}
			}
			if lab.Anycast.Healthy("r2") {
				t.Error("r2 still marked healthy at the front door")
			}
			if r := lab.Anycast.RegionFor(sb.PublicAddr); r.Name != "r1" {
				t.Errorf("B's site goes to %s with r2 down, want r1", r.Name)
			}
			if ev := lab.HealthEvents(); len(ev) != 1 || ev[0].Region != "r2" || ev[0].Healthy {
				t.Errorf("health events %+v, want r2 down", ev)
			}
			res = lab.RunTrial(ctx, sa.Host(), sb.Host(), TrialOptions{Name: "y", Timeout: 15 * time.Second, StopAt: want})
			if !res.Outcome.AtLeast(want) {
				t.Errorf("after r2 died: public -> %s: %s, want %s: %v", bType, res.Outcome, want, res.Err)
			}
		})
	}
}
