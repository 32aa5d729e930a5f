package natlab

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Interface and namespace names inside the lab.
const (
	bridgeDev = "br0"  // the public segment's bridge, in the internet namespace
	hostDev   = "eth0" // a host's only interface
	wanDev    = "wan"  // a NAT's outside interface
	lanDev    = "lan"  // a NAT's inside interface (a bridge, or the carrier's veth)
)

// Config configures a Lab. The zero value is ready to use.
type Config struct {
	// Prefix starts the name of every namespace the lab creates
	// ("<prefix>-inet", "<prefix>-n3", ...): lowercase letters and digits,
	// starting with a letter, at most 10 characters. Labs running at the
	// same time need different prefixes; Sweep(prefix) removes what a
	// crashed run left. Default: "km" plus four random characters.
	Prefix string
	// Logger receives the lab's progress at Info level: internet, servers
	// and sites built, sites verified, hosts renumbered, cuts made and
	// restored, lab closed. Default: discard.
	Logger *slog.Logger
	// IPTables forces an iptables backend: "nft" or "legacy". Default ""
	// picks the first that works in a namespace, nft first.
	IPTables string
}

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)

func (c *Config) validate() error {
	if c.Prefix != "" && !prefixRE.MatchString(c.Prefix) {
		return fmt.Errorf("%w: prefix %q: use 1-10 lowercase letters and digits, starting with a letter", ErrBadName, c.Prefix)
	}
	switch c.IPTables {
	case "", "nft", "legacy":
	default:
		return fmt.Errorf("%w: IPTables %q: use \"nft\", \"legacy\" or \"\" (auto)", ErrBadName, c.IPTables)
	}
	return nil
}

// Lab is a virtual internet of network namespaces. Build it with New, add
// servers and sites, and always Close it (defer lab.Close(), t.Cleanup in
// tests, and on SIGINT in commands): namespaces outlive the process that
// made them. The methods are safe for concurrent use.
type Lab struct {
	prefix string
	log    *slog.Logger
	ip     string // path of the ip program
	ipt    iptables
	inet   string // the internet namespace

	mu       sync.Mutex
	closed   bool
	netns    []string // created namespaces, in creation order
	names    map[string]bool
	used     map[netip.Addr]bool // public addresses in use
	nextSite int
	nextPort int // internet-side veth index
	nextNS   int
	servers  []*Host
	sites    []*Site

	// uplink is the link to the host (AddUplink); uplinkMade says its
	// veth exists, forwardWas is the host's ip_forward before it ("" when
	// the uplink did not change it).
	uplink     *Uplink
	uplinkMade bool
	forwardWas string

	verifierMu sync.Mutex
	verifier   *Host

	// failAt, when set (by tests), is called at each build step and makes
	// the step fail with its error.
	failAt func(step string) error
}

// New makes the internet namespace "<prefix>-inet": a bridge holding the
// public segment (203.0.113.0/24 and 198.51.100.0/24), routing between everything
// attached to it, so that iptables rules there (CutUDP) see all public
// traffic. It installs Debian's iptables package when missing. It needs
// root. On error nothing is left behind.
func New(ctx context.Context, cfg Config) (*Lab, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	ip, err := lookSbin("ip")
	if err != nil {
		return nil, fmt.Errorf("natlab: the ip program (Debian package iproute2) is missing: %w", err)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = randomPrefix()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	existing, err := listNetns()
	if err != nil {
		return nil, fmt.Errorf("natlab: list namespaces: %w", err)
	}
	for _, n := range existing {
		if strings.HasPrefix(n, cfg.Prefix+"-") {
			return nil, fmt.Errorf("%w: namespace %s exists; another lab uses prefix %q, or a crashed run left it (natlab.Sweep(%q) removes it)", ErrPrefixInUse, n, cfg.Prefix, cfg.Prefix)
		}
	}
	l := &Lab{
		prefix:   cfg.Prefix,
		log:      cfg.Logger.With("lab", cfg.Prefix),
		ip:       ip,
		names:    map[string]bool{},
		used:     map[netip.Addr]bool{},
		nextSite: 1,
	}
	l.inet = l.prefix + "-inet"
	if err := l.buildInternet(ctx, cfg.IPTables); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	l.log.Info("natlab: internet up", "netns", l.inet, "iptables", l.ipt.name)
	return l, nil
}

func (l *Lab) buildInternet(ctx context.Context, iptWant string) error {
	if err := l.addNetns(ctx, l.inet, nil); err != nil {
		return err
	}
	// Routing in and out of the same bridge would send ICMP redirects,
	// and hosts following them would talk past the router (and past
	// CutUDP): switch redirects off.
	if err := setSysctls(l.inet,
		"ipv4/ip_forward", "1",
		"ipv4/conf/all/send_redirects", "0",
		"ipv4/conf/default/send_redirects", "0",
	); err != nil {
		return err
	}
	gw1, gw2 := publicNet1.Addr().Next(), publicNet2.Addr().Next()
	l.used[gw1], l.used[gw2] = true, true
	for _, args := range [][]string{
		{"link", "add", bridgeDev, "address", bridgeMAC(0), "type", "bridge"},
		{"addr", "add", netip.PrefixFrom(gw1, publicNet1.Bits()).String(), "dev", bridgeDev},
		{"addr", "add", netip.PrefixFrom(gw2, publicNet2.Bits()).String(), "dev", bridgeDev},
		{"link", "set", bridgeDev, "up"},
	} {
		if err := l.ipIn(ctx, l.inet, args...); err != nil {
			return err
		}
	}
	ipt, err := findIPTables(ctx, l.ip, l.inet, iptWant)
	if err != nil {
		return err
	}
	l.ipt = ipt
	return nil
}

// Prefix returns the prefix of the lab's namespace names.
func (l *Lab) Prefix() string { return l.prefix }

// InternetNetns returns the name of the internet namespace, where the
// public segment's bridge and router live.
func (l *Lab) InternetNetns() string { return l.inet }

// IPTablesBackend returns the iptables backend in use: "nft" or "legacy".
func (l *Lab) IPTablesBackend() string { return l.ipt.name }

// Servers returns the servers added so far.
func (l *Lab) Servers() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.servers...)
}

// Sites returns the sites added so far.
func (l *Lab) Sites() []*Site {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Site(nil), l.sites...)
}

// Close removes every namespace the lab made, with the veths, bridges and
// iptables rules inside them, after killing any process still running in
// them (for example commands from Host.Command the caller did not stop).
// Sockets the caller opened with Host.ListenUDP and friends keep their
// namespace alive, unnamed, until closed. Close is idempotent and cleans
// partial builds; it returns the errors it met but removes what it can.
func (l *Lab) Close() error {
	l.mu.Lock()
	l.closed = true
	ns := l.netns
	l.netns = nil
	l.mu.Unlock()
	errs := []error{l.removeUplink()}
	for i := len(ns) - 1; i >= 0; i-- {
		if err := deleteNetns(ns[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if len(ns) > 0 {
		l.log.Info("natlab: closed", "namespaces", len(ns))
	}
	return errors.Join(errs...)
}

// Sweep removes what labs with this prefix left behind (a crashed run): every
// namespace named "<prefix>-...", killing processes still inside. Run it
// only when no live lab uses the prefix.
func Sweep(prefix string) error {
	if !prefixRE.MatchString(prefix) {
		return fmt.Errorf("%w: prefix %q: use 1-10 lowercase letters and digits, starting with a letter", ErrBadName, prefix)
	}
	names, err := listNetns()
	if err != nil {
		return fmt.Errorf("natlab: list namespaces: %w", err)
	}
	var errs []error
	for _, n := range names {
		if strings.HasPrefix(n, prefix+"-") {
			errs = append(errs, deleteNetns(n))
		}
	}
	// An uplink's root end (its lab end went with the namespace, and
	// usually the pair with it).
	if ip, err := lookSbin("ip"); err == nil {
		if _, err := run(context.Background(), nil, ip, "link", "show", prefix+"-up"); err == nil {
			_, err = run(context.Background(), nil, ip, "link", "del", prefix+"-up")
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// addNetns creates a namespace and records it for Close first, so a failure
// halfway is still cleaned. It brings up loopback, switches IPv6 off (the
// lab is IPv4; IPv6 would only add router solicitations and DAD), and sets
// the IPv4 knobs a new namespace would otherwise inherit from the machine:
// no reverse-path filter, no ICMP redirects followed.
//
// When track is not nil the name is appended to it too, so that a failed
// AddSite can remove exactly its own namespaces.
func (l *Lab) addNetns(ctx context.Context, name string, track *[]string) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.netns = append(l.netns, name)
	l.mu.Unlock()
	if track != nil {
		*track = append(*track, name)
	}
	if err := l.step("netns " + name); err != nil {
		return err
	}
	if _, err := run(ctx, nil, l.ip, "netns", "add", name); err != nil {
		return err
	}
	// A Close that ran while the namespace was being made may have
	// missed it.
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return errors.Join(ErrClosed, deleteNetns(name))
	}
	if err := setSysctls(name,
		"ipv6/conf/all/disable_ipv6", "1",
		"ipv6/conf/default/disable_ipv6", "1",
		"ipv4/conf/all/rp_filter", "0",
		"ipv4/conf/default/rp_filter", "0",
		"ipv4/conf/all/accept_redirects", "0",
		"ipv4/conf/default/accept_redirects", "0",
	); err != nil {
		return err
	}
	return l.ipIn(ctx, name, "link", "set", "lo", "up")
}

// ipIn runs `ip -n ns args...`.
func (l *Lab) ipIn(ctx context.Context, ns string, args ...string) error {
	_, err := run(ctx, nil, l.ip, append([]string{"-n", ns}, args...)...)
	return err
}

// iptablesIn runs the lab's iptables in namespace ns.
func (l *Lab) iptablesIn(ctx context.Context, ns string, args ...string) error {
	_, err := run(ctx, nil, l.ip, append([]string{"netns", "exec", ns, l.ipt.cmd, "-w"}, args...)...)
	return err
}

// restoreIn loads an iptables-restore ruleset in namespace ns.
func (l *Lab) restoreIn(ctx context.Context, ns, rules string) error {
	_, err := run(ctx, []byte(rules), l.ip, "netns", "exec", ns, l.ipt.restore, "-w")
	return err
}

// step runs the test hook for a named build step.
func (l *Lab) step(name string) error {
	if l.failAt != nil {
		return l.failAt(name)
	}
	return nil
}

// nsName returns a new namespace name "<prefix>-<kind><n>".
func (l *Lab) nsName(kind string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextNS++
	return fmt.Sprintf("%s-%s%d", l.prefix, kind, l.nextNS)
}

// claimName reserves a host or site name.
func (l *Lab) claimName(names ...string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	for _, n := range names {
		if n == "" || strings.ContainsAny(n, " \t\n/") {
			return fmt.Errorf("%w: %q: use a non-empty name without spaces or slashes", ErrBadName, n)
		}
		if l.names[n] {
			return fmt.Errorf("%w: %q is already used in this lab", ErrBadName, n)
		}
	}
	for _, n := range names {
		l.names[n] = true
	}
	return nil
}

// attachPublic plugs namespace ns into the public segment: a veth named dev
// in ns, its peer on the internet bridge, the given addresses as /32s and a
// default route via the internet router. Addresses are /32 so that all
// traffic between public hosts goes through the router.
func (l *Lab) attachPublic(ctx context.Context, ns, dev string, addrs []netip.Addr) error {
	l.mu.Lock()
	l.nextPort++
	port := fmt.Sprintf("p%d", l.nextPort)
	l.mu.Unlock()
	if err := l.veth(ctx, ns, dev, l.inet, port); err != nil {
		return err
	}
	if err := l.ipIn(ctx, l.inet, "link", "set", port, "master", bridgeDev, "up"); err != nil {
		return err
	}
	for _, a := range addrs {
		if err := l.ipIn(ctx, ns, "addr", "add", netip.PrefixFrom(a, 32).String(), "dev", dev); err != nil {
			return err
		}
	}
	if err := l.ipIn(ctx, ns, "link", "set", dev, "up"); err != nil {
		return err
	}
	return l.ipIn(ctx, ns, "route", "add", "default", "via", publicNet1.Addr().Next().String(), "dev", dev, "onlink")
}

// veth makes a veth pair with one end (name a) in namespace nsA and the
// other (name b) in nsB, created there directly: nothing appears in the
// root namespace, so names cannot clash between labs.
func (l *Lab) veth(ctx context.Context, nsA, a, nsB, b string) error {
	_, err := run(ctx, nil, l.ip, "link", "add", "name", a, "netns", nsA, "type", "veth", "peer", "name", b, "netns", nsB)
	return err
}

func randomPrefix() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return "km" + string(b)
}

// commandWaitDelay bounds how long Cmd.Wait waits for output pipes after
// the process is gone or killed.
const commandWaitDelay = 5 * time.Second

// nsCommand returns a command that runs program name in namespace ns.
func (l *Lab) nsCommand(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, l.ip, append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.WaitDelay = commandWaitDelay
	return cmd
}
