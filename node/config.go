package node

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/policy"
)

// Config configures a Node. The identity comes from KeyFile or Seed; Server
// is required.
type Config struct {
	// KeyFile is the path of the node's key file (PEM, mode 0600), made
	// with GenerateKey or `peer keygen`.
	KeyFile string
	// Seed is the 32-byte Ed25519 seed of the node's key, instead of
	// KeyFile.
	Seed []byte
	// Server is the rendezvous server: "host:port#<server-id>", as the
	// server prints it at start.
	Server string
	// ListenAddr is the local UDP address of the node's socket; default
	// ":0" (any port, both address families).
	ListenAddr string
	// AllowAny admits sessions and flows from any peer to any port.
	// Dialling out needs no permission.
	AllowAny bool
	// Allow are the allow rules, as `peer up --allow` takes them (each may
	// be a comma-separated list): <peer-id> allows every port,
	// <peer-id>:80,443,8000-8099,53/udp only those, [name=] in front names
	// the peer, * stands for any peer. Streams count as TCP flows; a stream
	// to a port no rule allows the peer is refused, logged and counted.
	// Default deny. See the policy package's documentation.
	Allow []string
	// NoDirect keeps every session on the relay (no hole punching).
	NoDirect bool
	// JoinToken is sent in every registration, for a rendezvous server
	// that requires one (its --join-token-file).
	JoinToken []byte
	// StreamRelay is a TLS stream relay, "wss://host:port/v1/tunnel#<relay-id>"
	// (without the fragment the certificate is checked against the system's
	// roots, as for an ACME certificate). When the rendezvous does not
	// answer over UDP within UDPTimeout at start, or when mid-session
	// neither the rendezvous nor a relay nor a direct path answers over UDP
	// any more (node/udpwatch.go), the node concludes that its network
	// blocks UDP and moves its socket into a tunnel to this relay; it
	// reconnects the tunnel when it breaks, keeps probing UDP from its old
	// port, and moves back when the rendezvous answers there.
	StreamRelay string
	// NoReports keeps the node from sending the rendezvous outcome reports
	// (wire.Report: both NAT behaviours, direct or relayed, times; no
	// addresses or peer IDs), which feed the server's traversal metrics.
	NoReports bool
	// RendezvousKeepalive is the interval of the cheap keepalives to the
	// rendezvous between registrations, by which the node notices within
	// about that time a rendezvous instance that died or a registry that
	// lost it (rzclient.Config.Keepalive); 0 means
	// rzclient.DefaultKeepalive, a negative value none.
	RendezvousKeepalive time.Duration
	// UDPTimeout is how long to wait for a UDP answer before using
	// StreamRelay; default 3 s.
	UDPTimeout time.Duration
	// Reflection bounds what the node sends to addresses that a stranger
	// named and that have not answered yet; zero fields take the defaults.
	Reflection ReflectionLimits
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
}

// ReflectionLimits bound what a node sends on a stranger's word: the
// candidates of a Connect (with AllowAny) or a peer's path update are
// probed within them until they answer. A zero field takes its default
// (in parentheses).
type ReflectionLimits struct {
	// CandidateProbes: probes to one unproven candidate per punch (8).
	CandidateProbes int
	// PeerProbes: probes to all unproven candidates of one peer per 30 s
	// (24).
	PeerProbes int
	// Rate and Burst: probes per second to unproven addresses, all peers
	// together (200, 400).
	Rate, Burst float64
	// DestRate and DestBurst: probes per second to one unproven IPv4
	// address or IPv6 /64, all peers together (20, 40).
	DestRate, DestBurst float64
	// ReplyRate and ReplyBurst: answers per second to probes from one
	// IPv4 address or IPv6 /64 that is not a proven path (50, 100).
	ReplyRate, ReplyBurst float64
	// MaxBirthdaySockets: extra sockets birthday punching holds open at
	// once (1024).
	MaxBirthdaySockets int
	// MaxSprays: birthday sprays (the easy side) running at once (2).
	MaxSprays int
}

// GenerateKey makes a new identity, writes it to a new key file at path
// (mode 0600; an existing file is never replaced) and returns its peer ID.
func GenerateKey(path string) (string, error) {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return "", err
	}
	if err := crypto.WriteKeyFile(path, id); err != nil {
		return "", err
	}
	return id.ID().String(), nil
}

// KeyID returns the peer ID of the key in a key file.
func KeyID(path string) (string, error) {
	id, err := crypto.LoadKeyFile(path)
	if err != nil {
		return "", err
	}
	return id.ID().String(), nil
}

func (c *Config) identity() (*crypto.Identity, error) {
	switch {
	case len(c.Seed) > 0 && c.KeyFile != "":
		return nil, fmt.Errorf("node: set Config.KeyFile or Config.Seed, not both")
	case len(c.Seed) > 0:
		id, err := crypto.IdentityFromSeed(c.Seed)
		if err != nil {
			return nil, fmt.Errorf("node: Config.Seed: %w", err)
		}
		return id, nil
	case c.KeyFile != "":
		id, err := crypto.LoadKeyFile(c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		return id, nil
	}
	return nil, fmt.Errorf("node: %w", ErrNoKey)
}

func (c *Config) policy(log *slog.Logger) (*policy.Policy, error) {
	rules, err := policy.ParseRules(c.Allow)
	if err != nil {
		return nil, fmt.Errorf("node: Config.Allow: %w", err)
	}
	return policy.New(policy.Config{Rules: rules, AllowAny: c.AllowAny, Logger: log.With("part", "policy")}), nil
}
