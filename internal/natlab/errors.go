package natlab

import "errors"

var (
	// ErrUnknownNATType is returned by ParseNATType and AddSite for a name
	// that is not one of AllTypes.
	ErrUnknownNATType = errors.New("natlab: unknown NAT type")
	// ErrNotRoot is returned by New when the process is not root: the lab
	// needs CAP_NET_ADMIN and CAP_SYS_ADMIN to make namespaces.
	ErrNotRoot = errors.New("natlab: needs root (network namespaces, veth pairs and iptables need CAP_NET_ADMIN and CAP_SYS_ADMIN)")
	// ErrClosed is returned by methods called after Lab.Close.
	ErrClosed = errors.New("natlab: lab is closed")
	// ErrPrefixInUse is returned by New when namespaces named with the
	// prefix already exist (another lab, or leftovers of a crashed run that
	// Sweep removes).
	ErrPrefixInUse = errors.New("natlab: prefix in use")
	// ErrBadName is returned for an invalid prefix or a duplicate or empty
	// host/site name.
	ErrBadName = errors.New("natlab: bad name")
	// ErrExhausted is returned when the lab has no address left to hand out.
	ErrExhausted = errors.New("natlab: addresses exhausted")
	// ErrVerify wraps every failure of Lab.Verify: the NAT did not behave
	// as its type says.
	ErrVerify = errors.New("natlab: verify failed")
	// ErrNoIPTables is returned by New when neither iptables backend
	// (nft, legacy) works inside a network namespace.
	ErrNoIPTables = errors.New("natlab: no working iptables backend")
)
