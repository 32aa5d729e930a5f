package mesh

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
)

// Peers maps instance numbers (1 to 65535) to their mesh addresses.
type Peers map[uint16]netip.AddrPort

// ParsePeers reads a peer list: comma-separated `<instance>=<ip>:<port>`
// entries, e.g. `1=10.0.1.5:3490,2=10.1.1.7:3490`. Empty text is an empty
// list.
func ParsePeers(s string) (Peers, error) {
	p := Peers{}
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		id, addr, ok := strings.Cut(e, "=")
		if !ok {
			return nil, fmt.Errorf("%w: entry %q: want <instance>=<ip>:<port>", ErrPeers, e)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(id), 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%w: entry %q: instance must be a number from 1 to 65535", ErrPeers, e)
		}
		ap, err := netip.ParseAddrPort(strings.TrimSpace(addr))
		if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			return nil, fmt.Errorf("%w: entry %q: want a specific ip:port after =", ErrPeers, e)
		}
		if _, dup := p[uint16(n)]; dup {
			return nil, fmt.Errorf("%w: instance %d listed twice", ErrPeers, n)
		}
		p[uint16(n)] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return p, nil
}

// Addrs returns the peers' addresses (for Config.Allow), in instance order.
func (p Peers) Addrs() []netip.Addr {
	ids := make([]int, 0, len(p))
	for id := range p {
		ids = append(ids, int(id))
	}
	sort.Ints(ids)
	out := make([]netip.Addr, 0, len(ids))
	for _, id := range ids {
		out = append(out, p[uint16(id)].Addr())
	}
	return out
}

// Directory is an instance's number and its peers' mesh addresses, for
// readers on the data path while a membership registry replaces them. The
// zero Directory has no number and no peers. It is safe for concurrent use.
type Directory struct {
	self  atomic.Uint32
	peers atomic.Pointer[Peers]
}

// NewDirectory returns a directory holding self and peers (kept, not
// copied: do not change peers afterwards).
func NewDirectory(self uint16, peers Peers) *Directory {
	d := &Directory{}
	d.Set(self, peers)
	return d
}

// Set replaces the number and the peers (kept, not copied).
func (d *Directory) Set(self uint16, peers Peers) {
	d.peers.Store(&peers)
	d.self.Store(uint32(self))
}

// Self is this instance's number; 0: none.
func (d *Directory) Self() uint16 { return uint16(d.self.Load()) }

// Lookup returns the mesh address of instance n.
func (d *Directory) Lookup(n uint16) (netip.AddrPort, bool) {
	p := d.peers.Load()
	if p == nil {
		return netip.AddrPort{}, false
	}
	a, ok := (*p)[n]
	return a, ok
}
