package names

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/policy"
)

// DefaultSuffix is the DNS suffix of keymesh names: web.keymesh,
// <peer-id>.keymesh (the SOCKS5 proxy has accepted <peer-id>.keymesh all
// along).
const DefaultSuffix = "keymesh"

// Limits of a names file.
const (
	MaxNames    = 4096
	maxLineSize = 512
)

// ErrBadName is a name, suffix or names file that does not parse, or a
// name given to two keys.
var ErrBadName = errors.New("bad name")

// Table maps names under one suffix to peers. It is read-only once made,
// so safe for concurrent use.
type Table struct {
	suffix string // lower case, no dots around
	names  map[string]crypto.PeerID
}

// NewTable makes a table for suffix (DefaultSuffix when empty) from names,
// which map short names (policy.CheckName) to peers. A name that reads as
// a peer ID is refused: <peer-id>.<suffix> means that peer.
func NewTable(suffix string, names map[string]crypto.PeerID) (*Table, error) {
	if suffix == "" {
		suffix = DefaultSuffix
	}
	suffix = strings.ToLower(strings.Trim(suffix, "."))
	for _, l := range strings.Split(suffix, ".") {
		if err := policy.CheckName(l); err != nil {
			return nil, fmt.Errorf("%w: suffix %q: %w", ErrBadName, suffix, err)
		}
	}
	if len(names) > MaxNames {
		return nil, fmt.Errorf("%w: %d names, at most %d", ErrBadName, len(names), MaxNames)
	}
	t := &Table{suffix: suffix, names: make(map[string]crypto.PeerID, len(names))}
	for n, id := range names {
		if err := policy.CheckName(n); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadName, err)
		}
		if _, err := crypto.ParsePeerID(n); err == nil {
			return nil, fmt.Errorf("%w: name %q is a peer ID", ErrBadName, n)
		}
		t.names[strings.ToLower(n)] = id
	}
	return t, nil
}

// Suffix returns the table's suffix.
func (t *Table) Suffix() string { return t.suffix }

// Lookup returns the peer that host names: <peer-id>.<suffix> or
// <name>.<suffix> (any case, with or without the final dot). A host not
// under the suffix, or an unknown name, is not found.
func (t *Table) Lookup(host string) (crypto.PeerID, bool) {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	label, ok := strings.CutSuffix(h, "."+t.suffix)
	if !ok || label == "" || strings.Contains(label, ".") {
		return crypto.PeerID{}, false
	}
	if len(label) == crypto.PeerIDLen {
		if id, err := crypto.ParsePeerID(label); err == nil {
			return id, true
		}
	}
	id, ok := t.names[label]
	return id, ok
}

// LookupAddr is Lookup returning the peer's overlay address.
func (t *Table) LookupAddr(host string) (netip.Addr, bool) {
	id, ok := t.Lookup(host)
	if !ok {
		return netip.Addr{}, false
	}
	return id.OverlayAddr(), true
}

// InZone reports whether host is the suffix or under it.
func (t *Table) InZone(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	return h == t.suffix || strings.HasSuffix(h, "."+t.suffix)
}

// Add puts name for id into names, refusing a name already given to
// another key.
func Add(names map[string]crypto.PeerID, name string, id crypto.PeerID) error {
	name = strings.ToLower(name)
	if old, ok := names[name]; ok && old != id {
		return fmt.Errorf("%w: %q names both %s and %s", ErrBadName, name, old.Short(), id.Short())
	}
	names[name] = id
	return nil
}

// ReadFile reads a names file into names: one `<name> <peer-id>` a line;
// blank lines and lines starting with # are skipped.
func ReadFile(path string, names map[string]crypto.PeerID) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("names file: %w", err)
	}
	defer f.Close()
	if err := Parse(f, names); err != nil {
		return fmt.Errorf("names file %s: %w", path, err)
	}
	return nil
}

// Parse reads names in the names file format from r into names.
func Parse(r io.Reader, names map[string]crypto.PeerID) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, maxLineSize), maxLineSize)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || s[0] == '#' {
			continue
		}
		f := strings.Fields(s)
		if len(f) != 2 {
			return fmt.Errorf("%w: line %d: want <name> <peer-id>", ErrBadName, line)
		}
		if err := policy.CheckName(f[0]); err != nil {
			return fmt.Errorf("%w: line %d: %w", ErrBadName, line, err)
		}
		id, err := crypto.ParsePeerID(f[1])
		if err != nil {
			return fmt.Errorf("%w: line %d: %w", ErrBadName, line, err)
		}
		if err := Add(names, f[0], id); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if len(names) > MaxNames {
			return fmt.Errorf("%w: more than %d names", ErrBadName, MaxNames)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadName, err)
	}
	return nil
}
