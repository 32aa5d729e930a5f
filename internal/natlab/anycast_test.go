package natlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseFrontDoor(t *testing.T) {
	for in, want := range map[string]FrontDoor{"accel": Accelerator, " BGP ": BGP} {
		if got, err := ParseFrontDoor(in); err != nil || got != want {
			t.Errorf("ParseFrontDoor(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseFrontDoor("ga"); !errors.Is(err, ErrBadName) {
		t.Errorf("ParseFrontDoor(ga) error = %v, want ErrBadName", err)
	}
	bad := []AnycastConfig{
		{Model: "x", Regions: []string{"r1"}, Roles: []Role{{Name: "srv", Ports: []Port{{"udp", 1}}}}},
		{Model: BGP, Roles: []Role{{Name: "srv"}}},
		{Model: BGP, Regions: []string{"r1", "r1"}, Roles: []Role{{Name: "srv"}}},
		{Model: Accelerator, Regions: []string{"r1"}, Roles: []Role{{Name: "srv"}}},
		{Model: Accelerator, Regions: []string{"r1"}, Roles: []Role{{Name: "srv", Ports: []Port{{"sctp", 1}}}}},
	}
	for i, c := range bad {
		if err := c.validate(); err == nil {
			t.Errorf("config %d accepted: %+v", i, c)
		}
	}
}

func TestFrontDoorRules(t *testing.T) {
	a := &Anycast{
		roles:   []Role{{Name: "srv", Ports: []Port{{"udp", 3478}}}},
		addrs:   map[string]netip.Addr{"srv": netip.MustParseAddr("198.51.100.9")},
		down:    map[string]bool{},
		nearest: map[netip.Addr][]string{},
	}
	for i, name := range []string{"r1", "r2"} {
		h := &Host{Addr: netip.MustParseAddr(fmt.Sprintf("203.0.113.%d", 20+i))}
		a.Regions = append(a.Regions, &Region{Name: name, Index: i, Instances: []*Host{h}, roles: a.roles})
	}
	client := netip.MustParseAddr("203.0.113.50")
	a.nearest[client] = a.order([]string{"r2"})
	nat := a.frontDoorNAT()
	for _, want := range []string{
		"-A PREROUTING -i wan -s 203.0.113.50/32 -d 198.51.100.9/32 -p udp --dport 3478 -j DNAT --to-destination 203.0.113.21\n",
		"-A PREROUTING -i wan -d 198.51.100.9/32 -p udp --dport 3478 -j DNAT --to-destination 203.0.113.20\n",
	} {
		if !strings.Contains(nat, want) {
			t.Errorf("nat table lacks %q:\n%s", want, nat)
		}
	}
	r2 := a.Regions[1].Instances[0].Addr
	a.nearest[r2] = a.order([]string{"r2"})
	if nat := a.frontDoorNAT(); !strings.Contains(nat, "-s 203.0.113.21/32 -d 198.51.100.9/32 -p udp --dport 3478 -j DNAT --to-destination 203.0.113.20\n") {
		t.Errorf("an instance is sent to itself through the front door:\n%s", nat)
	}
	a.down["r2"] = true
	if r := a.chooseLocked(client); r.Name != "r1" {
		t.Errorf("with r2 down, client goes to %s, want r1", r.Name)
	}
	a.down["r1"] = true
	if r := a.chooseLocked(client); r.Name != "r2" {
		t.Errorf("with every region down, client goes to %s, want its nearest r2", r.Name)
	}
	if !strings.Contains(frontDoorFilter(nil), ":FORWARD DROP") {
		t.Error("the front door forwards what it does not track")
	}
}

// anycastRig is a lab with two regions behind anycast addresses, one
// role ("srv", UDP 3478 and TCP 3443) and two client sites: a
// port-restricted NAT (address-dependent filtering) and a full cone.
type anycastRig struct {
	lab    *Lab
	any    *Anycast
	pr, fc *Site
	srv    map[string]*net.UDPConn // region -> instance socket on port 3478
	got    chan arrival
}

type arrival struct {
	region string
	from   netip.AddrPort
	msg    string
}

func newAnycastRig(t *testing.T, ctx context.Context, model FrontDoor) *anycastRig {
	t.Helper()
	lab := newLab(t, ctx)
	any, err := lab.AddAnycast(ctx, AnycastConfig{
		Model:   model,
		Regions: []string{"r1", "r2"},
		Roles:   []Role{{Name: "srv", Ports: []Port{{"udp", 3478}, {"tcp", 3443}}}},
	})
	if err != nil {
		t.Fatalf("AddAnycast: %v", err)
	}
	rig := &anycastRig{lab: lab, any: any, srv: map[string]*net.UDPConn{}, got: make(chan arrival, 64)}
	if rig.pr, err = lab.AddSite(ctx, "pr", PortRestricted); err != nil {
		t.Fatal(err)
	}
	if rig.fc, err = lab.AddSite(ctx, "fc", FullCone); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Site{rig.pr, rig.fc} {
		if err := any.SetNearest(ctx, s.PublicAddr, "r1", "r2"); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range any.Regions {
		h := r.Instance("srv")
		c, err := h.ListenUDP(ctx, netip.AddrPortFrom(any.ListenAddr(h, "srv"), 3478))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		rig.srv[r.Name] = c
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				rig.got <- arrival{r.Name, from, string(buf[:n])}
				_, _ = c.WriteToUDPAddrPort([]byte("re "+string(buf[:n])), from)
			}
		}()
	}
	return rig
}

// client opens a UDP socket in a site's host.
func (rig *anycastRig) client(t *testing.T, ctx context.Context, s *Site) *net.UDPConn {
	t.Helper()
	c, err := s.Host().ListenUDP(ctx, netip.AddrPortFrom(s.Host().Addr, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends msg from c to the anycast address until an instance
// answers, and returns where it arrived and where the answer came from.
func (rig *anycastRig) exchange(t *testing.T, c *net.UDPConn, msg string) (arrival, netip.AddrPort) {
	t.Helper()
	dst := netip.AddrPortFrom(rig.any.Addr("srv"), 3478)
	buf := make([]byte, 1500)
	var seen *arrival
	for try := 0; try < 20; try++ {
		if _, err := c.WriteToUDPAddrPort([]byte(msg), dst); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			if string(buf[:n]) != "re "+msg {
				continue
			}
			for seen == nil {
				a := <-rig.got
				if a.msg == msg {
					seen = &a
				}
			}
			return *seen, from
		}
	}
	t.Fatalf("%q to %s: no answer", msg, dst)
	return arrival{}, netip.AddrPort{}
}

// arrivesAt reports whether msg sent from src to dst reaches c.
func arrivesAt(c *net.UDPConn, src *net.UDPConn, dst netip.AddrPort, msg string) (netip.AddrPort, bool) {
	for i := 0; i < 3; i++ {
		_, _ = src.WriteToUDPAddrPort([]byte(msg), dst)
	}
	buf := make([]byte, 1500)
	_ = c.SetReadDeadline(time.Now().Add(silenceWait))
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return netip.AddrPort{}, false
		}
		if string(buf[:n]) == msg {
			return from, true
		}
	}
}

// TestAnycast proves both front-door models with real packets: the
// nearest region gets a client's flow and sees the client's own address;
// answers come from the anycast address; the accelerator keeps a flow on
// its instance when the table changes and BGP follows the routes; an
// instance's own send to a client whose flow another region holds leaves
// from its regional address behind the accelerator (a full cone takes it,
// address-dependent filtering drops it: issue 11) and from the anycast
// address under BGP (both take it); TCP answers come back through the
// front door; and when a region is marked down its clients' flows go on in
// the next-nearest region.
func TestAnycast(t *testing.T) {
	needRoot(t)
	for _, model := range []FrontDoor{Accelerator, BGP} {
		t.Run(string(model), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			rig := newAnycastRig(t, ctx, model)
			any := rig.any
			anyAddr := netip.AddrPortFrom(any.Addr("srv"), 3478)
			r1, r2 := any.Region("r1").Instance("srv"), any.Region("r2").Instance("srv")

			// Nearest region, client address preserved, answer from the
			// anycast address.
			pr, fc := rig.client(t, ctx, rig.pr), rig.client(t, ctx, rig.fc)
			a, from := rig.exchange(t, pr, "pr-1")
			if a.region != "r1" {
				t.Errorf("port-restricted client's flow went to %s, want its nearest r1", a.region)
			}
			if a.from.Addr() != rig.pr.PublicAddr {
				t.Errorf("instance saw the client as %s, want its own public address %s", a.from, rig.pr.PublicAddr)
			}
			if from != anyAddr {
				t.Errorf("answer came from %s, want the anycast address %s", from, anyAddr)
			}
			prMapping := a.from
			fa, _ := rig.exchange(t, fc, "fc-1")
			fcMapping := fa.from

			// Flow affinity: the table now sends the client to r2.
			if err := any.SetNearest(ctx, rig.pr.PublicAddr, "r2", "r1"); err != nil {
				t.Fatal(err)
			}
			a, _ = rig.exchange(t, pr, "pr-2")
			wantRunning := "r1" // the accelerator keeps the flow on its instance
			if model == BGP {
				wantRunning = "r2" // routing changed: packets follow it
			}
			if a.region != wantRunning {
				t.Errorf("running flow went to %s after the table changed, want %s", a.region, wantRunning)
			}
			if a, _ := rig.exchange(t, rig.client(t, ctx, rig.pr), "pr-new"); a.region != "r2" {
				t.Errorf("a new flow went to %s, want the new nearest r2", a.region)
			}
			if err := any.SetNearest(ctx, rig.pr.PublicAddr, "r1", "r2"); err != nil {
				t.Fatal(err)
			}
			if model == BGP {
				rig.exchange(t, pr, "pr-back") // routes are back at r1
			}

			// The holder of the flow reaches the client.
			if got, ok := arrivesAt(pr, rig.srv["r1"], prMapping, "punch-r1"); !ok || got != anyAddr {
				t.Errorf("send from the instance holding the flow: arrived %v from %s, want from %s", ok, got, anyAddr)
			}
			// Another region's own send: the bug of issue 11.
			wantSrc := anyAddr
			if model == Accelerator {
				wantSrc = netip.AddrPortFrom(r2.Addr, 3478)
			}
			got, ok := arrivesAt(fc, rig.srv["r2"], fcMapping, "punch-r2-fc")
			if !ok || got != wantSrc {
				t.Errorf("r2's send to the full cone: arrived %v from %s, want from %s", ok, got, wantSrc)
			}
			got, ok = arrivesAt(pr, rig.srv["r2"], prMapping, "punch-r2-pr")
			if model == Accelerator && ok {
				t.Errorf("r2's send to the port-restricted NAT arrived (from %s): the accelerator must not send an instance's own flow from the anycast address", got)
			}
			if model == BGP && (!ok || got != anyAddr) {
				t.Errorf("r2's send to the port-restricted NAT: arrived %v from %s, want from %s", ok, got, anyAddr)
			}

			if model == Accelerator {
				// An instance cannot push its own traffic through the
				// front door: forced onto the backbone, it is dropped.
				if _, ok := arrivesAt(fc, markedSocket(t, ctx, r1), fcMapping, "sneak"); ok {
					t.Error("the front door forwarded a packet of a flow it does not track")
				}
			}

			// An instance is a client too (a relay's stream presence
			// talking to the rendezvous): behind the accelerator, sent to
			// another region (its own is nearest by default), the answer
			// reaches it over the internet from the anycast address;
			// under BGP it holds the address and reaches itself.
			if r := any.RegionFor(r2.Addr); r.Name != "r2" {
				t.Errorf("instance r2 as a client goes to %s by default, want its own region", r.Name)
			}
			if err := any.SetNearest(ctx, r2.Addr, "r1"); err != nil {
				t.Fatal(err)
			}
			inst, err := r2.ListenUDP(ctx, netip.AddrPortFrom(r2.Addr, 0))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { inst.Close() })
			wantRegion := "r1"
			if model == BGP {
				wantRegion = "r2"
			}
			if a, from := rig.exchange(t, inst, "from-r2"); a.region != wantRegion || a.from.Addr() != r2.Addr || from != anyAddr {
				t.Errorf("instance r2 as a client: arrived in %s from %s, answer from %s; want %s, %s, %s", a.region, a.from, from, wantRegion, r2.Addr, anyAddr)
			}

			if model == BGP {
				// One instance's send from the shared anycast address
				// reaches another's regional address (accept_local).
				if _, ok := arrivesAt(inst, rig.srv["r1"], inst.LocalAddr().(*net.UDPAddr).AddrPort(), "r1-to-r2"); !ok {
					t.Error("r1's send from the anycast address to r2's regional address was lost")
				}
			}

			// TCP: connect to the anycast address, the instance sees the
			// client, the answer comes back.
			checkTCP(t, ctx, rig, r1)

			// Failover: r1 goes down, the running flow goes on in r2.
			if err := any.SetHealthy(ctx, "r1", false); err != nil {
				t.Fatal(err)
			}
			a, from = rig.exchange(t, pr, "pr-failover")
			if a.region != "r2" || a.from != prMapping || from != anyAddr {
				t.Errorf("after r1 went down: flow in %s seen as %s, answer from %s; want r2, %s, %s", a.region, a.from, from, prMapping, anyAddr)
			}
			if any.RegionFor(rig.pr.PublicAddr).Name != "r2" {
				t.Errorf("RegionFor = %s with r1 down", any.RegionFor(rig.pr.PublicAddr).Name)
			}
			if err := any.SetHealthy(ctx, "r1", true); err != nil {
				t.Fatal(err)
			}
			if a, _ := rig.exchange(t, rig.client(t, ctx, rig.pr), "pr-back-up"); a.region != "r1" {
				t.Errorf("a new flow after r1 came back went to %s, want r1", a.region)
			}
		})
	}
}

// markedSocket opens a UDP socket in h whose packets carry the backbone's
// routing mark, as if the instance sent over the backbone on its own.
func markedSocket(t *testing.T, ctx context.Context, h *Host) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		pc, err := lc.ListenPacket(ctx, "udp4", netip.AddrPortFrom(h.Addr, 0).String())
		if err != nil {
			return err
		}
		c = pc.(*net.UDPConn)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkTCP connects from the port-restricted site to the anycast address's
// TCP port, which instance h (the client's region) serves: h must see the
// client's public address and the client must get h's answer.
func checkTCP(t *testing.T, ctx context.Context, rig *anycastRig, h *Host) {
	t.Helper()
	ln, err := h.ListenTCP(ctx, netip.AddrPortFrom(rig.any.ListenAddr(h, "srv"), 3443))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		seen <- c.RemoteAddr().String()
		_, _ = io.WriteString(c, "hello over tcp\n")
	}()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := rig.pr.Host().DialTCP(dctx, netip.AddrPortFrom(rig.any.Addr("srv"), 3443))
	if err != nil {
		t.Fatalf("TCP to the anycast address: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hello over tcp\n" {
		t.Errorf("TCP answer %q, %v", b, err)
	}
	remote := <-seen
	if ap, _ := netip.ParseAddrPort(remote); ap.Addr() != rig.pr.PublicAddr {
		t.Errorf("TCP instance saw %s, want the client's %s", remote, rig.pr.PublicAddr)
	}
}
