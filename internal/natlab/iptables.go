package natlab

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/keymesh/keymesh/internal/testutil/debpkg"
)

// iptables is the chosen iptables backend: the program and its -restore
// counterpart.
type iptables struct {
	name    string // "nft" or "legacy"
	cmd     string // path of iptables
	restore string // path of iptables-restore
}

// backends returns the candidate backends in order of preference.
func backends(want string) []string {
	switch want {
	case "nft":
		return []string{"nft"}
	case "legacy":
		return []string{"legacy"}
	}
	return []string{"nft", "legacy"}
}

// findIPTables installs Debian's iptables package when missing and returns
// the first backend whose nat and filter tables work inside namespace ns.
func findIPTables(ctx context.Context, ip, ns, want string) (iptables, error) {
	if _, err := debpkg.Ensure(ctx, "iptables", "iptables"); err != nil {
		return iptables{}, fmt.Errorf("%w: %w", ErrNoIPTables, err)
	}
	probe := []byte("*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
	var errs []string
	for _, b := range backends(want) {
		cmd, err1 := lookSbin("iptables-" + b)
		restore, err2 := lookSbin("iptables-" + b + "-restore")
		if err1 != nil || err2 != nil {
			errs = append(errs, fmt.Sprintf("%s: not installed", b))
			continue
		}
		if _, err := run(ctx, probe, ip, "netns", "exec", ns, restore, "-w"); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", b, err))
			continue
		}
		return iptables{name: b, cmd: cmd, restore: restore}, nil
	}
	return iptables{}, fmt.Errorf("%w in a network namespace: %s", ErrNoIPTables, strings.Join(errs, "; "))
}

// lookSbin finds a program on PATH or in the sbin directories, which may be
// off PATH.
func lookSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin/", "/sbin/"} {
		if p, err := exec.LookPath(d + name); err == nil {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// natRules is the iptables-restore input for one NAT namespace. wan is the
// WAN interface; dnatTo (full cone only) is the inside host.
//
// Every NAT drops NEW connections arriving on its WAN for the router itself,
// as a home router does. Without that rule each unsolicited probe leaves a
// confirmed conntrack entry behind, a later outbound mapping that would
// reuse the port clashes with it and gets another port, and port
// preservation (which hole punching relies on) breaks. NEW connections
// forwarded from the WAN inwards are dropped too, except the full cone's
// DNAT.
func natRules(t NATType, wan string, dnatTo netip.Addr) string {
	var b strings.Builder
	b.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	if t == FullCone {
		fmt.Fprintf(&b, "-A PREROUTING -i %s -p udp -j DNAT --to-destination %s\n", wan, dnatTo)
	}
	masq := "-A POSTROUTING -o " + wan + " -j MASQUERADE"
	if t == Symmetric {
		masq += " --random-fully"
	}
	b.WriteString(masq + "\nCOMMIT\n")
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	fmt.Fprintf(&b, "-A INPUT -i %s -m conntrack --ctstate NEW -j DROP\n", wan)
	if t == UDPBlocked {
		b.WriteString("-A FORWARD -p udp -j DROP\n")
	}
	if t == FullCone {
		fmt.Fprintf(&b, "-A FORWARD -i %s -m conntrack --ctstate DNAT -j ACCEPT\n", wan)
	}
	fmt.Fprintf(&b, "-A FORWARD -i %s -m conntrack --ctstate NEW -j DROP\n", wan)
	b.WriteString("COMMIT\n")
	return b.String()
}

// dnatRule is the full cone's PREROUTING rule (rule 1), without the chain
// verb, for iptables -R when the host's address changes.
func dnatRule(wan string, to netip.Addr) []string {
	return []string{"-i", wan, "-p", "udp", "-j", "DNAT", "--to-destination", to.String()}
}
