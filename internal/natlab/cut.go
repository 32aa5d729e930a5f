package natlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// CutUDP drops UDP between public addresses a and b, both ways, in the
// internet namespace's router (iptables FORWARD), as a path failure would;
// established flows are cut too. Use a site's PublicAddr or a server's
// address. restore removes the rules again; it is idempotent. Cuts may
// overlap: each restore removes only its own rules.
func (l *Lab) CutUDP(ctx context.Context, a, b netip.Addr) (restore func() error, err error) {
	return l.Cut(ctx, "udp", a, b)
}

// Cut is CutUDP for protocol proto: "udp", "tcp", or "all".
func (l *Lab) Cut(ctx context.Context, proto string, a, b netip.Addr) (restore func() error, err error) {
	switch proto {
	case "udp", "tcp", "all":
	default:
		return nil, fmt.Errorf("natlab: cut: protocol %q: use udp, tcp or all", proto)
	}
	for _, x := range []netip.Addr{a, b} {
		if !isPublic(x) {
			return nil, fmt.Errorf("natlab: cut %s %s-%s: %s is not a public lab address (%s or %s); cut between sites' PublicAddr or servers", proto, a, b, x, publicNet1, publicNet2)
		}
	}
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	rule := func(src, dst netip.Addr) []string {
		return []string{"FORWARD", "-s", src.String(), "-d", dst.String(), "-p", proto, "-j", "DROP"}
	}
	rules := [][]string{rule(a, b), rule(b, a)}
	var added [][]string
	del := func() error {
		var errs []error
		for _, r := range added {
			if err := l.iptablesIn(context.Background(), l.inet, append([]string{"-D"}, r...)...); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	for _, r := range rules {
		if err := l.iptablesIn(ctx, l.inet, append([]string{"-I"}, r...)...); err != nil {
			return nil, errors.Join(fmt.Errorf("natlab: cut %s %s-%s: %w", proto, a, b, err), del())
		}
		added = append(added, r)
	}
	l.log.Info("natlab: cut", "proto", proto, "a", a, "b", b)
	var once sync.Once
	var rerr error
	return func() error {
		once.Do(func() {
			l.mu.Lock()
			closed := l.closed
			l.mu.Unlock()
			if closed {
				return // the namespace and its rules are gone
			}
			rerr = del()
			l.log.Info("natlab: cut restored", "proto", proto, "a", a, "b", b)
		})
		return rerr
	}, nil
}
