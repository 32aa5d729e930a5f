package policy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/keymesh/keymesh/internal/crypto"
)

// Proto is a flow's transport protocol. Streams between peers count as TCP.
type Proto uint8

// Protocols. Any appears only in rules: a range for both TCP and UDP.
const (
	Any Proto = iota
	TCP
	UDP
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return "any"
}

// PortRange is the ports Lo to Hi (inclusive) of one protocol, or of both
// when Proto is Any.
type PortRange struct {
	Lo, Hi uint16
	Proto  Proto
}

func (r PortRange) contains(proto Proto, port uint16) bool {
	return (r.Proto == Any || r.Proto == proto) && port >= r.Lo && port <= r.Hi
}

func (r PortRange) String() string {
	s := strconv.Itoa(int(r.Lo))
	if r.Hi != r.Lo {
		s += "-" + strconv.Itoa(int(r.Hi))
	}
	if r.Proto != Any {
		s += "/" + r.Proto.String()
	}
	return s
}

// Rule allows one peer (or, with AnyPeer, every peer) to reach Ports, or
// every port when Ports is empty.
type Rule struct {
	// Name is the short name the rule gives the peer ("web" in
	// web=<peer-id>), empty when none.
	Name    string
	Peer    crypto.PeerID
	AnyPeer bool
	Ports   []PortRange
}

// String returns the rule in the form ParseRules reads.
func (r Rule) String() string {
	s := "*"
	if !r.AnyPeer {
		s = r.Peer.String()
	}
	if r.Name != "" {
		s = r.Name + "=" + s
	}
	if len(r.Ports) > 0 {
		ps := make([]string, len(r.Ports))
		for i, p := range r.Ports {
			ps[i] = p.String()
		}
		s += ":" + strings.Join(ps, ",")
	}
	return s
}

// allows reports whether the rule lets its peer reach port over proto.
func (r Rule) allows(proto Proto, port uint16) bool {
	if len(r.Ports) == 0 {
		return true
	}
	for _, p := range r.Ports {
		if p.contains(proto, port) {
			return true
		}
	}
	return false
}

// maxRanges bounds the port items of one rule.
const maxRanges = 256

// ParseRules reads --allow values. Each value is split at commas; an item
// that is a port item (80, 8000-8099, 53/udp) continues the rule before
// it, any other item starts a new rule: [name=]<peer-id|*>[:ports].
func ParseRules(values []string) ([]Rule, error) {
	var rules []Rule
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			if isPortItem(item) {
				if len(rules) == 0 {
					return nil, fmt.Errorf("%w %q: ports before any peer; want <peer-id>:%s", ErrBadRule, item, item)
				}
				pr, err := parsePorts(item)
				if err != nil {
					return nil, err
				}
				last := &rules[len(rules)-1]
				if len(last.Ports) == 0 {
					return nil, fmt.Errorf("%w %q: the rule before it (%s) allows every port already; write <peer-id>:<ports>", ErrBadRule, item, last)
				}
				if len(last.Ports) >= maxRanges {
					return nil, fmt.Errorf("%w: more than %d port items for %s", ErrBadRule, maxRanges, last.Peer.Short())
				}
				last.Ports = append(last.Ports, pr)
				continue
			}
			r, err := parseRule(item)
			if err != nil {
				return nil, err
			}
			rules = append(rules, r)
		}
	}
	return rules, nil
}

// isPortItem reports whether s is a port item rather than the start of a
// rule: it starts with a digit and is shorter than a peer ID (which may
// start with a digit too) with no '=' or ':' in it.
func isPortItem(s string) bool {
	return s[0] >= '0' && s[0] <= '9' && len(s) < crypto.PeerIDLen && !strings.ContainsAny(s, "=:")
}

func parseRule(s string) (Rule, error) {
	var r Rule
	rest := s
	if name, after, ok := strings.Cut(rest, "="); ok {
		if err := CheckName(name); err != nil {
			return r, fmt.Errorf("%w %q: %w", ErrBadRule, s, err)
		}
		r.Name, rest = strings.ToLower(name), after
	}
	peer, ports, hasPorts := strings.Cut(rest, ":")
	if peer == "*" {
		if r.Name != "" {
			return r, fmt.Errorf("%w %q: a name needs one peer, not *", ErrBadRule, s)
		}
		r.AnyPeer = true
	} else {
		id, err := crypto.ParsePeerID(peer)
		if err != nil {
			return r, fmt.Errorf("%w %q: want [name=]<peer-id>[:ports] with a peer ID of 52 base32 characters, as `peer id` prints: %w", ErrBadRule, s, err)
		}
		r.Peer = id
	}
	if hasPorts {
		if ports == "" {
			return r, fmt.Errorf("%w %q: empty port list after ':'", ErrBadRule, s)
		}
		pr, err := parsePorts(ports)
		if err != nil {
			return r, err
		}
		r.Ports = []PortRange{pr}
	}
	return r, nil
}

// parsePorts reads one port item: N, N-M, either with /tcp or /udp.
func parsePorts(s string) (PortRange, error) {
	var pr PortRange
	spec, proto, hasProto := strings.Cut(s, "/")
	if hasProto {
		switch strings.ToLower(proto) {
		case "tcp":
			pr.Proto = TCP
		case "udp":
			pr.Proto = UDP
		default:
			return pr, fmt.Errorf("%w: port item %q: protocol %q, want tcp or udp", ErrBadRule, s, proto)
		}
	}
	lo, hi, isRange := strings.Cut(spec, "-")
	a, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return pr, fmt.Errorf("%w: port item %q: want N, N-M, N/tcp or N/udp with ports 0-65535", ErrBadRule, s)
	}
	b := a
	if isRange {
		if b, err = strconv.ParseUint(hi, 10, 16); err != nil || b < a {
			return pr, fmt.Errorf("%w: port item %q: want a range N-M with N <= M <= 65535", ErrBadRule, s)
		}
	}
	pr.Lo, pr.Hi = uint16(a), uint16(b)
	return pr, nil
}

// CheckName checks a short peer name: a DNS label of 1 to 63 letters,
// digits and hyphens that starts with a letter and does not end with a
// hyphen. Case does not matter (names are compared in lower case).
func CheckName(name string) error {
	if len(name) == 0 || len(name) > 63 {
		return fmt.Errorf("name %q: want 1 to 63 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i] | 0x20 // lower case for letters
		switch {
		case c >= 'a' && c <= 'z':
		case i > 0 && (name[i] >= '0' && name[i] <= '9' || name[i] == '-'):
		default:
			return fmt.Errorf("name %q: want letters, digits and hyphens, starting with a letter", name)
		}
	}
	if name[len(name)-1] == '-' {
		return fmt.Errorf("name %q: must not end with a hyphen", name)
	}
	return nil
}
