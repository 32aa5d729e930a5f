// Package natlab builds a virtual internet out of Linux network namespaces,
// veth pairs, bridges and iptables, with real Linux NATs, so that the
// project's peers and servers can be proven against NAT behaviour the
// kernel itself produces. It needs root.
//
// # Topology and addresses
//
// New makes the internet namespace "<prefix>-inet": a bridge (br0) holding
// the public segment, 203.0.113.0/24 and 198.51.100.0/24, with the
// namespace routing at 203.0.113.1 and 198.51.100.1. Everything on the
// public segment has /32 addresses and a default route via 203.0.113.1, so
// all public traffic passes the router, where CutUDP can drop it. Servers
// get one address in each public /24; NAT WANs and public hosts get the
// next free address in 203.0.113.0/24 (then 198.51.100.0/24).
//
//	server (AddServer)  203.0.113.x + 198.51.100.x ─┐
//	public site host    203.0.113.x ────────────────┤ br0 in <prefix>-inet
//	NAT wan             203.0.113.x ────────────────┘ (router .1)
//	 └ NAT lan (bridge) 100.64.N.1/24
//	     ├ host         100.64.N.2/24
//	     └ host         100.64.N.3/24   (same-nat only)
//
// A double NAT puts the home router's WAN (100.100.N.2) on a link to the
// carrier NAT (100.100.N.1), whose WAN is public. Each site gets the next
// N from 1.
//
// Every NAT namespace forwards, masquerades out of its WAN as its NATType
// says, and firewalls itself as a home router does: NEW connections arriving
// on the WAN for the router itself or for the LAN are dropped (except the
// full cone's DNAT). Without that INPUT rule unsolicited probes leave
// conntrack entries that break port preservation. The iptables backend is
// nft when it works in a namespace, else legacy; Debian's iptables package
// is installed when missing.
//
// Veth pairs are created directly inside the lab's namespaces, never in the
// root namespace; names are "<prefix>-inet", "<prefix>-s1" (servers),
// "<prefix>-n2" (NATs), "<prefix>-c3" (carrier NATs), "<prefix>-h4"
// (hosts) and "<prefix>-v5" (Verify's own server). Removing the namespaces
// removes everything. The one exception is the uplink below.
//
// # Uplink to the host
//
// AddUplink links the internet namespace to the root namespace, for servers
// outside the lab: a veth "<prefix>-up" (100.126.255.1/30 on the host,
// 100.126.255.2/30 in the internet namespace), routes up it for the
// prefixes the caller names only (no default route), and host routes for
// the lab's public prefixes back, without NAT. Close deletes it (and puts
// the host's IPv4 forwarding back when UplinkConfig.Forward turned it on);
// Sweep removes a leftover one. One lab per host may have an uplink.
//
// # Anycast regions
//
// AddAnycast adds regions of server instances (one host per role and
// region, each with a regional address on the public segment) behind one
// anycast address per role, in one of two models. Accelerator is a managed
// front door (AWS Global Accelerator-like) in its own namespace
// "<prefix>-aN", linked to every instance by a backbone veth
// (100.127.N.0/24): it DNATs each new flow to the instance of the client's
// nearest healthy region, keeping the client's address; conntrack keeps
// the flow there; the instance routes replies of those flows (connmark)
// back over the backbone, where they get the anycast source again; anything
// else an instance sends leaves from its regional address. BGP gives every
// instance its role's anycast address and the internet router per-source
// routes to the nearest healthy region. SetNearest fills the per-site
// nearest-region table, SetHealthy marks a region up or down (the
// accelerator deletes the flows it had sent there).
//
// # Use
//
//	lab, err := natlab.New(ctx, natlab.Config{Logger: log})
//	if err != nil { ... }
//	defer lab.Close() // also on SIGINT: namespaces outlive the process
//	srv, _ := lab.AddServer(ctx, "rendezvous")
//	site, _ := lab.AddSite(ctx, "alice", natlab.Symmetric)
//	if err := lab.Verify(ctx, site); err != nil { ... }
//	cmd := site.Host().Command(ctx, "/tmp/peer", "up", "--server", srv.Addr.String()+":3478")
//	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
//
// In tests: t.Cleanup(func() { lab.Close() }). Programs run in a host with
// Host.Command; sockets of this process are opened inside a host with
// Host.ListenUDP, Host.ListenTCP, Host.DialTCP or, for anything else,
// Host.Do. Sweep removes what a crashed run left.
//
// Linux conntrack forgets an idle UDP mapping after 30 s (120 s once
// traffic flowed both ways); Linux NATs do not hairpin.
package natlab
