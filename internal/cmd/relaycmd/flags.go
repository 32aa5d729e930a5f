// Package relaycmd is the relay binary's wiring: its flags (also settable
// as KEYMESH_* environment variables), the ticket key handling, the sockets
// it opens, and the services it runs side by side on them: the stateless
// UDP ticket relay (package relay), TURN (package turnrelay) and, when it
// lands, the TCP/TLS stream relay. cmd/relay only calls Main.
package relaycmd

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/addrpolicy"
	"github.com/keymesh/keymesh/internal/certs"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/flagenv"
	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/relay"
	"github.com/keymesh/keymesh/internal/streamrelay"
	"github.com/keymesh/keymesh/internal/turnrelay"

	"github.com/keymesh/keymesh/internal/cmd/usage"
)

// Options is everything Run needs. Each service has its own sub-options;
// a new one (the TCP/TLS stream relay) gets a field and a start function
// beside startTURN in run.go.
type Options struct {
	// Listen is the ticket relay's UDP address.
	Listen string
	// ReusePort is how many SO_REUSEPORT sockets serve Listen, each read
	// by its own goroutine.
	ReusePort int
	// UDPBuffer is the receive and send buffer asked for on each socket,
	// in bytes (Linux caps it at net.core.rmem_max / wmem_max); 0 leaves
	// the system default.
	UDPBuffer int
	// Admin is the admin HTTP address (/healthz, /readyz, /metrics);
	// empty means none.
	Admin string
	// LogFormat and LogLevel configure the logger (obs.NewLogger).
	LogFormat, LogLevel string

	// AllowDestinations are the ranges the relay may reach for its clients
	// although addrpolicy refuses them by default (loopback, private,
	// CGNAT, link-local, multicast, the relay's own addresses).
	AllowDestinations []netip.Prefix

	Ticket    TicketOptions
	RateLimit relay.RateLimit
	TURN      TURNOptions
	Stream    StreamOptions
	Mesh      MeshOptions

	// Ready, when set, is called once every socket is open (for tests
	// and tools embedding the relay).
	Ready func(Addrs)
}

// TicketOptions configure the ticket keys.
type TicketOptions struct {
	// KeyFile holds the keys (crypto.LoadTicketKeyFile).
	KeyFile string
	// TTL is the life of a ticket.
	TTL time.Duration
	// Dev makes a random in-memory key when KeyFile is empty.
	Dev bool
}

// TURNOptions configure the TURN server; it runs when Listen or TCPListen
// is set.
type TURNOptions struct {
	Listen     string // UDP address
	TCPListen  string // TCP address
	SecretFile string // TURN REST API shared secret
	Realm      string
	RelayIP    netip.Addr // address allocations bind to; default the listen IP
	// AdvertiseIP is the address put in XOR-RELAYED-ADDRESS; default RelayIP.
	AdvertiseIP netip.Addr
	Sockets     int // SO_REUSEPORT UDP sockets
	Quota       int // live allocations per user (0: default, <0: none)
	// MaxAllocations caps live allocations server-wide (<0: none).
	MaxAllocations int
	// MaxTCPConnsPerSource and MaxTCPConns cap open TCP connections per
	// source and server-wide (<0: none).
	MaxTCPConnsPerSource, MaxTCPConns int
	// MaxTCPConnsPerNet caps them per IPv4 /24 or IPv6 /48.
	MaxTCPConnsPerNet int
	// MaxPeerConns caps the connections peers open to one TCP allocation
	// (<0: none).
	MaxPeerConns int
	// AllocationRate, BindingRate and ChallengeRate are per-source rates
	// (per second; <0: none) of Allocates, Binding answers and
	// challenges larger than their request.
	AllocationRate, BindingRate, ChallengeRate float64
	// IntegrityRate is the server-wide rate (per second; <0: none) of
	// the guard's MESSAGE-INTEGRITY checks for unverified sources.
	IntegrityRate float64
}

// MeshOptions number this relay among the relays that share the ticket
// keys and connect it to the others (package mesh).
type MeshOptions struct {
	// Instance is this relay's number, 1 to 65535; tickets name it. 0:
	// none.
	Instance uint
	// Listen is this relay's private mesh address; empty: no mesh.
	Listen string
	// Advertise is the address the other relays reach this one at
	// (mesh.Config.Advertise); empty: Listen.
	Advertise string
	// Peers lists every relay's number and mesh address (mesh.ParsePeers).
	Peers string
	// Registry is the Redis URL of the membership (package meshreg) that
	// replaces Instance and Peers; empty: the static list.
	Registry string
	// SecretFile holds the secret every instance shares.
	SecretFile string
	// Rate limits mesh messages per source address (mesh.Config.Rate;
	// negative: no limit).
	Rate float64
	// Unverified bounds the tag checks of unknown senders' messages
	// (mesh.Config.UnverifiedRate; negative: no cap).
	Unverified float64
}

func (o TURNOptions) enabled() bool { return o.Listen != "" || o.TCPListen != "" }

// Addrs are the addresses a running relay bound.
type Addrs struct {
	UDP     net.Addr // ticket relay
	Admin   net.Addr // nil without an admin server
	TURNUDP net.Addr // nil when off
	TURNTCP net.Addr // nil when off
	Stream  net.Addr // TCP/TLS stream relay; nil when off
	// StreamURL is the stream relay's address for peers (with the key pin
	// when the certificate is self-signed).
	StreamURL string
}

// command is what the command line asks for.
type command struct {
	opts        Options
	version     bool
	genKey      bool
	genKeyID    uint
	rateLimitPS float64
}

// parse reads args (and KEYMESH_* variables through lookup) into a command.
func parse(args []string, lookup func(string) (string, bool), help io.Writer) (*command, error) {
	c := &command{}
	o := &c.opts
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.Listen, "listen", ":3479", "UDP address of the ticket relay")
	fs.IntVar(&o.ReusePort, "reuseport", 1, "number of SO_REUSEPORT sockets on --listen, each served by its own goroutine (about one per core)")
	fs.IntVar(&o.UDPBuffer, "udp-buffer", 4<<20, "receive/send buffer of each relay socket in bytes, capped by net.core.rmem_max/wmem_max (0: system default)")
	fs.StringVar(&o.Admin, "admin", "127.0.0.1:9091", "admin HTTP address for /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&o.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.Ticket.KeyFile, "ticket-key-file", "", "ticket key file: lines `<id> <64 hex>`, the first seals, all open (make one with --gen-ticket-key)")
	fs.DurationVar(&o.Ticket.TTL, "ticket-ttl", relay.DefaultTicketTTL, "life of a ticket")
	fs.BoolVar(&o.Ticket.Dev, "dev", false, "without --ticket-key-file, use a random in-memory ticket key (development only: tickets die with the process)")
	rl := &o.RateLimit
	fs.Float64Var(&c.rateLimitPS, "rate-limit", relay.DefaultRate, "RelaySend packets per second each source may send to each destination, charged once the ticket opened; a source or destination is an IPv4 address or IPv6 /64, whatever the port (0: no per-source limits at all)")
	fs.Float64Var(&rl.Burst, "rate-limit-burst", relay.DefaultBurst, "burst of the per-source RelaySend limit, in packets")
	fs.Float64Var(&rl.ChallengeRate, "challenge-rate", relay.DefaultChallengeRate, "bind challenges per second sent to each source whose address is not proven yet (bounds what spoofed binds reflect)")
	fs.Float64Var(&rl.ChallengeBurst, "challenge-burst", relay.DefaultChallengeBurst, "burst of the per-source challenge limit")
	fs.Float64Var(&rl.BindRate, "bind-rate", relay.DefaultBindRate, "binds per second each source with a proven address may have checked (one signature check each)")
	fs.Float64Var(&rl.BindBurst, "bind-burst", relay.DefaultBindBurst, "burst of the per-source bind limit")
	fs.Float64Var(&rl.BindsPerSecond, "binds-per-second", relay.DefaultBindsPerSecond, "bind signature checks per second over all sources (negative: no cap)")
	fs.IntVar(&rl.MaxSources, "rate-limit-sources", relay.DefaultMaxSources, "sources (for --rate-limit: source and destination pairs) each per-source limit table holds; when full it forgets idle ones first (a forgotten one starts again with a full bucket)")
	var streamSources string
	fs.StringVar(&streamSources, "stream-relay-sources", "", "addresses or CIDR ranges (comma-separated) of other TLS stream relays' presence addresses, from which all their tunnels bind: there --rate-limit, --bind-rate and --challenge-rate and their bursts are multiplied by --stream-relay-factor (this relay's own --stream-presence-ip and --stream-advertise-ip count when --tls-listen is on)")
	fs.Float64Var(&rl.StreamRelayFactor, "stream-relay-factor", relay.DefaultStreamRelayFactor, "multiplier of the per-source limits for stream relay presence addresses (see --stream-relay-sources)")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	fs.BoolVar(&c.genKey, "gen-ticket-key", false, "print a new ticket key line and exit (rotate: put the new line first, keep the old one second until its tickets expire)")
	m := &o.Mesh
	fs.UintVar(&m.Instance, "instance", 0, "this relay's number (1-65535) among the relays sharing the ticket keys: its tickets name it, so packets for its peers leave from it (0: none; set it only once every relay runs a build that reads it)")
	fs.StringVar(&m.Listen, "mesh-listen", "", "this relay's private ip:port for the mesh between relays (needs --peer-secret-file, and --instance with --mesh-peers or --mesh-registry; empty: off, every packet leaves from the relay it reached)")
	fs.StringVar(&m.Advertise, "mesh-advertise", "", "the ip:port the other relays reach this relay's mesh at and its heartbeats name, when --mesh-listen is a private address mapped 1:1 to a public one (e.g. the instance's public IPv4 on AWS); its packets to the other relays must leave from it (default: the --mesh-listen address)")
	fs.StringVar(&m.Peers, "mesh-peers", "", "the relays' numbers and mesh addresses, e.g. 1=10.0.1.5:3490,2=10.1.1.7:3490 (this relay's own entry may be listed)")
	fs.StringVar(&m.Registry, "mesh-registry", "", "Redis URL (as the rendezvous' --redis) where the relays claim their instance numbers and find each other's mesh addresses, instead of --instance and --mesh-peers, e.g. redis://10.0.0.9:6379/0: for auto-scaling groups")
	fs.Float64Var(&m.Rate, "mesh-rate-limit", mesh.DefaultRate, "authentic mesh messages per second handed on from each source address, charged once their tag verified, so a flood spoofed from an instance's address spends none of it; heartbeats are free (negative: no limit); other relays' forwards count, so size it for the relay traffic one relay hands another")
	fs.Float64Var(&m.Unverified, "mesh-unverified-rate", mesh.DefaultUnverifiedRate, "tag checks per second, over all sources, of mesh messages from a sender not yet authenticated at their source address and port (a stranger's forgeries, each instance's first message); messages of known instances are checked without it (negative: no cap)")
	fs.StringVar(&m.SecretFile, "peer-secret-file", "", "secret shared by every instance of the deployment; keys the mesh (HMAC) between relays")
	fs.UintVar(&c.genKeyID, "ticket-key-id", 1, "key id (0-255) of the line --gen-ticket-key prints")

	t := &o.TURN
	var relayIP, advertiseIP, allowDest string
	fs.StringVar(&allowDest, "allow-destinations", "", "CIDR ranges (comma-separated) TURN clients and stream tunnels may reach although they are refused by default (loopback, private, CGNAT, link-local incl. 169.254.169.254, multicast, reserved, this host's own addresses), e.g. 10.1.0.0/16")
	fs.StringVar(&t.Listen, "turn-listen", "", "UDP address of the TURN server (empty: off)")
	fs.StringVar(&t.TCPListen, "turn-tcp-listen", "", "TCP address of the TURN server (empty: off)")
	fs.StringVar(&t.SecretFile, "turn-secret-file", "", "file whose text (trimmed) is the TURN REST API shared secret, as coturn's static-auth-secret; the rendezvous reads the same file (needed when TURN is on)")
	fs.StringVar(&t.Realm, "turn-realm", turnrelay.DefaultRealm, "TURN realm")
	fs.StringVar(&relayIP, "turn-relay-ip", "", "IP that TURN allocations bind to: the public one, the private one it is forwarded to, or 0.0.0.0 (default: the --turn-listen IP)")
	fs.StringVar(&advertiseIP, "turn-advertise-ip", "", "public IP put in XOR-RELAYED-ADDRESS, where peers send (default: --turn-relay-ip; needed when allocations bind to a wildcard address)")
	fs.IntVar(&t.Sockets, "turn-sockets", 0, "number of SO_REUSEPORT UDP sockets on --turn-listen, each read by its own goroutine (a client's flow stays on one; 0: one per CPU)")
	fs.IntVar(&t.Quota, "turn-quota", turnrelay.DefaultMaxAllocationsPerUser, "live TURN allocations per user (negative: no limit)")
	fs.IntVar(&t.MaxAllocations, "turn-max-allocations", turnrelay.DefaultMaxAllocations, "live TURN allocations in all; the one beyond gets 508 (negative: no limit)")
	fs.IntVar(&t.MaxTCPConnsPerSource, "turn-max-tcp-conns-per-source", turnrelay.DefaultMaxTCPConnsPerSource, "open TCP connections to the TURN server per source IPv4 address or IPv6 /64; one beyond is closed on accept (negative: no limit)")
	fs.IntVar(&t.MaxTCPConnsPerNet, "turn-max-tcp-conns-per-net", turnrelay.DefaultMaxTCPConnsPerNet, "open TCP connections to the TURN server per source IPv4 /24 or IPv6 /48 (an IPv6 client holds 65,536 /64s in one /48); one beyond is closed on accept (negative: no limit)")
	fs.IntVar(&t.MaxTCPConns, "turn-max-tcp-conns", turnrelay.DefaultMaxTCPConns, "open TCP connections to the TURN server in all; one beyond is closed on accept (negative: no limit)")
	fs.IntVar(&t.MaxPeerConns, "turn-max-peer-conns", turnrelay.DefaultMaxPeerConns, "open connections peers may make to one RFC 6062 TCP allocation; one beyond is closed on accept (negative: no limit)")
	fs.Float64Var(&t.AllocationRate, "turn-allocation-rate", turnrelay.DefaultAllocationRate, "authenticated TURN Allocates per second per source IPv4 address or IPv6 /64, burst "+strconv.Itoa(turnrelay.DefaultAllocationBurst)+" (negative: no limit)")
	fs.Float64Var(&t.BindingRate, "turn-binding-rate", turnrelay.DefaultBindingRate, "STUN Binding requests answered per second per source on the TURN ports, burst "+strconv.Itoa(turnrelay.DefaultBindingBurst)+" (negative: no limit)")
	fs.Float64Var(&t.ChallengeRate, "turn-challenge-rate", turnrelay.DefaultChallengeRate, "TURN 401/438 challenges larger than their request sent per second per source, burst "+strconv.Itoa(turnrelay.DefaultChallengeBurst)+"; the rest are dropped (negative: no limit)")
	fs.Float64Var(&t.IntegrityRate, "turn-integrity-rate", turnrelay.DefaultIntegrityRate, "MESSAGE-INTEGRITY checks per second, for the whole TURN server, that requests from sources (address and port) without a request verified in the last 10 minutes may take before pion, burst "+strconv.Itoa(turnrelay.DefaultIntegrityBurst)+"; a request over it, or whose integrity fails, is dropped unanswered (negative: no limit)")
	st := &o.Stream
	var presenceIP, streamAdvertiseIP, acmeDomains, ownPorts string
	fs.StringVar(&st.TLSListen, "tls-listen", "", "TCP address of the TLS stream relay for networks without UDP, e.g. :443 (empty: off)")
	fs.StringVar(&st.KeyFile, "key", "relay.key", "relay identity key file (created if missing); without ACME the stream relay's certificate is made from it and peers pin it")
	fs.StringVar(&presenceIP, "stream-presence-ip", "", "IP the stream relay's per-tunnel UDP sockets bind to: the public one, a private one or 0.0.0.0 (default: the --tls-listen host)")
	fs.StringVar(&streamAdvertiseIP, "stream-advertise-ip", "", "public IP tunnels are told their UDP presence has, when it is not on the interface (AWS); needed when --stream-presence-ip is private or unspecified (default: --stream-presence-ip)")
	fs.StringVar(&ownPorts, "stream-own-ports", "", "UDP ports (comma-separated) of other public keymesh services on this host, e.g. a rendezvous on 3478, that tunnels may reach at this host's addresses (the ticket relay's and TURN's ports always are; every other port of the host is refused)")
	fs.IntVar(&st.Limits.MaxTunnels, "stream-max-tunnels", streamrelay.DefaultMaxTunnels, fmt.Sprintf("open stream tunnels, those in their handshake included; each idle one holds about %d KiB of relay memory, so the default %d tunnels ≈ %d MiB: size it to the memory the relay may give tunnels", streamrelay.TunnelMemory>>10, streamrelay.DefaultMaxTunnels, streamrelay.DefaultMaxTunnels*streamrelay.TunnelMemory>>20))
	fs.IntVar(&st.Limits.MaxTunnelsPerIP, "stream-max-tunnels-per-ip", streamrelay.DefaultMaxTunnelsPerIP, "open stream tunnels per client IPv4 address or IPv6 /64")
	fs.IntVar(&st.Limits.MaxTunnelsPerNet, "stream-max-tunnels-per-net", streamrelay.DefaultMaxTunnelsPerNet, "open stream tunnels per client IPv4 /24 or IPv6 /48")
	fs.Float64Var(&st.Limits.OpenRate, "stream-open-rate", streamrelay.DefaultOpenRate, "TCP connections, and separately stream tunnels, a client IPv4 address or IPv6 /64 may open per second (a connection over it is closed before its TLS handshake)")
	fs.Float64Var(&st.Limits.OpenBurst, "stream-open-burst", streamrelay.DefaultOpenBurst, "burst of --stream-open-rate, in connections and in tunnels")
	fs.DurationVar(&st.Limits.HandshakeTimeout, "stream-handshake-timeout", streamrelay.DefaultHandshakeTimeout, "time a stream client has for each of its TLS handshake with request headers, and its tunnel hello; also how long an idle HTTP connection stays open")
	fs.DurationVar(&st.Limits.IdleTimeout, "stream-idle-timeout", streamrelay.DefaultIdleTimeout, "a stream tunnel whose client sends no datagram for this long is closed")
	fs.DurationVar(&st.Limits.WriteTimeout, "stream-write-timeout", streamrelay.DefaultWriteTimeout, "a stream tunnel whose client takes no datagram for this long is closed")
	fs.IntVar(&st.MaxHeaderBytes, "stream-max-header-bytes", streamrelay.DefaultMaxHeaderBytes, "largest HTTP request header the stream relay reads, in bytes")
	fs.Float64Var(&st.Limits.Rate, "stream-rate", streamrelay.DefaultRate, "datagrams per second each stream tunnel carries in each direction")
	fs.IntVar(&st.Limits.Burst, "stream-burst", streamrelay.DefaultBurst, "burst of --stream-rate, in datagrams")
	fs.IntVar(&st.Limits.ByteRate, "stream-byte-rate", streamrelay.DefaultByteRate, "payload bytes per second each stream tunnel carries in each direction (burst: a quarter second)")
	fs.IntVar(&st.Limits.IPByteRate, "stream-ip-byte-rate", streamrelay.DefaultIPByteRate, "payload bytes per second all stream tunnels of one client IPv4 address or IPv6 /64 send out together (burst: a quarter second)")
	fs.IntVar(&st.Limits.MaxDestinations, "stream-max-destinations", streamrelay.DefaultMaxDestinations, "distinct destinations (address and port) a stream tunnel may have sent to within --stream-destination-timeout")
	fs.DurationVar(&st.Limits.DestinationTTL, "stream-destination-timeout", streamrelay.DefaultDestinationTTL, "how long a destination a stream tunnel stopped sending to keeps its place among --stream-max-destinations")
	fs.Float64Var(&st.Limits.ProbeRate, "stream-probe-rate", streamrelay.DefaultProbeRate, "datagrams per second a stream tunnel may send to an address that has not answered it, all its ports together (registering, binding, punching); an address that sent to the presence from a destination (address and port) the tunnel sent to within --stream-destination-timeout gets --stream-rate until it has been silent that long")
	fs.Float64Var(&st.Limits.ProbeBurst, "stream-probe-burst", streamrelay.DefaultProbeBurst, "burst of --stream-probe-rate, in datagrams")
	fs.Float64Var(&st.Limits.UnsolicitedRate, "stream-unsolicited-rate", streamrelay.DefaultUnsolicitedRate, "datagrams per second each stream tunnel carries to its client from sources (address and port) it has not sent to within --stream-destination-timeout, a bucket of its own: a flood at a tunnel's public presence address spends this, never the --stream-rate and --stream-byte-rate of the answers its client asked for")
	fs.IntVar(&st.Limits.UnsolicitedBurst, "stream-unsolicited-burst", streamrelay.DefaultUnsolicitedBurst, "burst of --stream-unsolicited-rate, in datagrams")
	var streamServers string
	fs.StringVar(&streamServers, "stream-servers", "", "UDP addresses ip:port (comma-separated) of keymesh rendezvous servers and ticket relays elsewhere: each stream tunnel may send them, with this host's ticket relay and --stream-own-ports, only --stream-server-rate datagrams per second (RelaySend data aside), so that one tunnel cannot spend what they allow this relay's address")
	fs.Float64Var(&st.Limits.ServerRate, "stream-server-rate", streamrelay.DefaultServerRate, "datagrams per second each stream tunnel may send to the keymesh servers (--stream-servers, this host's ticket relay and --stream-own-ports) all together, RelaySend data aside")
	fs.Float64Var(&st.Limits.ServerBurst, "stream-server-burst", streamrelay.DefaultServerBurst, "burst of --stream-server-rate, in datagrams")
	fs.StringVar(&acmeDomains, "acme-domain", "", "domain names (comma-separated) for an ACME certificate on the stream relay (empty: self-signed)")
	fs.StringVar(&st.ACME.Email, "acme-email", "", "ACME account e-mail")
	fs.StringVar(&st.ACME.CA, "acme-ca", certs.LetsEncrypt, "ACME directory URL")
	fs.StringVar(&st.ACME.CARootsFile, "acme-ca-roots", "", "PEM roots to trust for the ACME CA's own HTTPS (a private CA)")
	fs.StringVar(&st.ACME.StorageDir, "acme-storage", "", "directory for ACME accounts and certificates (default ~/.local/share/keymesh/certs)")
	fs.IntVar(&st.ACME.HTTPPort, "acme-http-port", 0, "port of the HTTP-01 challenge listener (default 80)")
	fs.Usage = flagenv.Usage(fs)

	if err := flagenv.ParseEnv(fs, args, lookup); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(help)
			fs.Usage()
			return nil, err
		}
		return nil, usage.Errorf("%s (see relay --help)", firstLine(err.Error()))
	}
	if fs.NArg() > 0 {
		return nil, usage.Errorf("unexpected argument %q: the relay takes only flags (see relay --help)", fs.Arg(0))
	}
	if c.version || c.genKey {
		if c.genKeyID > 255 {
			return nil, usage.Errorf("--ticket-key-id %d: a key id is 0 to 255", c.genKeyID)
		}
		return c, nil
	}
	if relayIP != "" {
		ip, err := netip.ParseAddr(relayIP)
		if err != nil {
			return nil, usage.Errorf("--turn-relay-ip %q is not an IP address", relayIP)
		}
		t.RelayIP = ip
	}
	if advertiseIP != "" {
		ip, err := netip.ParseAddr(advertiseIP)
		if err != nil || ip.IsUnspecified() {
			return nil, usage.Errorf("--turn-advertise-ip %q is not a specific IP address: give the public IP peers reach", advertiseIP)
		}
		t.AdvertiseIP = ip
	}
	if allowDest != "" {
		p, err := addrpolicy.ParsePrefixes(allowDest)
		if err != nil {
			return nil, usage.Errorf("--allow-destinations: %v", err)
		}
		o.AllowDestinations = p
	}
	if presenceIP != "" {
		ip, err := netip.ParseAddr(presenceIP)
		if err != nil {
			return nil, usage.Errorf("--stream-presence-ip %q is not an IP address", presenceIP)
		}
		st.PresenceIP = ip
	}
	if streamAdvertiseIP != "" {
		ip, err := netip.ParseAddr(streamAdvertiseIP)
		if err != nil || ip.IsUnspecified() {
			return nil, usage.Errorf("--stream-advertise-ip %q is not a specific IP address (give the public IP, e.g. 203.0.113.7)", streamAdvertiseIP)
		}
		st.AdvertiseIP = ip
	}
	for _, f := range splitList(ownPorts) {
		p, err := strconv.ParseUint(f, 10, 16)
		if err != nil || p == 0 {
			return nil, usage.Errorf("--stream-own-ports: %q is not a port (give e.g. 3478,3480)", f)
		}
		st.OwnPorts = append(st.OwnPorts, uint16(p))
	}
	for _, f := range splitList(streamServers) {
		ap, err := netip.ParseAddrPort(f)
		if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			return nil, usage.Errorf("--stream-servers: %q is not ip:port (give e.g. 203.0.113.5:3478,203.0.113.6:3479)", f)
		}
		st.Servers = append(st.Servers, ap)
	}
	if streamSources != "" {
		p, err := addrpolicy.ParsePrefixes(streamSources)
		if err != nil {
			return nil, usage.Errorf("--stream-relay-sources: %v", err)
		}
		o.RateLimit.StreamRelays = p
	}
	st.ACME.Domains = splitList(acmeDomains)
	if c.rateLimitPS <= 0 {
		o.RateLimit.Disabled = true
	} else {
		o.RateLimit.Rate = c.rateLimitPS
	}
	return c, c.check()
}

// check validates option values that flag types cannot.
func (c *command) check() error {
	o := &c.opts
	switch {
	case o.ReusePort < 1 || o.ReusePort > 256:
		return usage.Errorf("--reuseport %d: give 1 to 256 sockets", o.ReusePort)
	case o.Ticket.TTL < time.Second:
		return usage.Errorf("--ticket-ttl %v: give at least 1s (default %v)", o.Ticket.TTL, relay.DefaultTicketTTL)
	case o.Ticket.KeyFile != "" && o.Ticket.Dev:
		return usage.Errorf("--dev and --ticket-key-file both given: --dev is for running without a key file; drop one")
	case !o.RateLimit.Disabled && o.RateLimit.Burst < 1:
		return usage.Errorf("--rate-limit-burst %v: give at least 1 packet", o.RateLimit.Burst)
	case !o.RateLimit.Disabled && (o.RateLimit.ChallengeRate <= 0 || o.RateLimit.ChallengeBurst < 1):
		return usage.Errorf("--challenge-rate %v, --challenge-burst %v: give a rate above 0 and a burst of at least 1", o.RateLimit.ChallengeRate, o.RateLimit.ChallengeBurst)
	case !o.RateLimit.Disabled && (o.RateLimit.BindRate <= 0 || o.RateLimit.BindBurst < 1):
		return usage.Errorf("--bind-rate %v, --bind-burst %v: give a rate above 0 and a burst of at least 1", o.RateLimit.BindRate, o.RateLimit.BindBurst)
	case o.RateLimit.BindsPerSecond == 0:
		return usage.Errorf("--binds-per-second 0 would refuse every bind: give a positive number, or a negative one for no cap")
	case o.RateLimit.StreamRelayFactor < 1:
		return usage.Errorf("--stream-relay-factor %v: give at least 1 (default %v)", o.RateLimit.StreamRelayFactor, relay.DefaultStreamRelayFactor)
	case o.RateLimit.MaxSources < 1:
		return usage.Errorf("--rate-limit-sources %d: give at least 1", o.RateLimit.MaxSources)
	case o.TURN.enabled() && o.TURN.SecretFile == "":
		return usage.Errorf("TURN is on but --turn-secret-file is missing: create one with `head -c 32 /dev/urandom | base64 > turn.secret && chmod 600 turn.secret`")
	case o.TURN.enabled() && (o.TURN.Sockets < 0 || o.TURN.Sockets > 256):
		return usage.Errorf("--turn-sockets %d: give 1 to 256, or 0 for one per CPU", o.TURN.Sockets)
	case o.UDPBuffer < 0:
		return usage.Errorf("--udp-buffer %d: give bytes, or 0 for the system default", o.UDPBuffer)
	case o.Stream.enabled() && o.Stream.noAdvertise():
		return usage.Errorf("--tls-listen %q with no specific --stream-presence-ip: give --stream-advertise-ip, the public IP tunnels are reached at", o.Stream.TLSListen)
	case o.Stream.enabled() && o.Stream.Limits.invalid() != "":
		return usage.Errorf("--stream-%s must be above 0 (see relay --help for its default)", o.Stream.Limits.invalid())
	case o.Stream.enabled() && o.Stream.MaxHeaderBytes < 1024:
		return usage.Errorf("--stream-max-header-bytes %d: give at least 1024 (default %d)", o.Stream.MaxHeaderBytes, streamrelay.DefaultMaxHeaderBytes)
	case o.Listen == "":
		return usage.Errorf("--listen is empty: give the ticket relay's UDP address, e.g. :3479")
	case o.Mesh.Instance > 65535:
		return usage.Errorf("--instance %d: give a number from 1 to 65535 (0: none)", o.Mesh.Instance)
	case o.Mesh.Registry != "" && (o.Mesh.Instance != 0 || o.Mesh.Peers != ""):
		return usage.Errorf("--mesh-registry numbers the relays and lists them: drop --instance and --mesh-peers")
	case o.Mesh.Registry != "" && o.Mesh.Listen == "":
		return usage.Errorf("--mesh-registry needs --mesh-listen, this relay's own mesh address")
	case o.Mesh.Advertise != "" && o.Mesh.Listen == "":
		return usage.Errorf("--mesh-advertise needs --mesh-listen, the address the mesh binds")
	case o.Mesh.Listen != "" && o.Mesh.Registry == "" && o.Mesh.Instance == 0:
		return usage.Errorf("--mesh-listen needs --instance, this relay's number among the relays (or --mesh-registry)")
	case o.Mesh.Listen != "" && o.Mesh.SecretFile == "":
		return usage.Errorf("--mesh-listen needs --peer-secret-file, the secret the instances share")
	case o.Mesh.Listen != "" && o.Mesh.Registry == "" && o.Mesh.Peers == "":
		return usage.Errorf("--mesh-listen needs --mesh-peers, e.g. 1=10.0.1.5:3490,2=10.1.1.7:3490 (or --mesh-registry)")
	case o.Mesh.Rate == 0:
		return usage.Errorf("--mesh-rate-limit 0 would drop every forward: give a rate, or a negative value for no limit")
	case o.Mesh.Unverified == 0:
		return usage.Errorf("--mesh-unverified-rate 0 would never hear a new instance: give a rate, or a negative value for no cap")
	case o.Mesh.Listen == "" && o.Mesh.Peers != "":
		return usage.Errorf("--mesh-peers needs --mesh-listen, this relay's own mesh address")
	}
	if o.Mesh.Listen != "" {
		if _, err := o.Mesh.parse(); err != nil {
			return err
		}
	}
	return nil
}

// meshAddrs are the parsed mesh flags.
type meshAddrs struct {
	listen, advertise netip.AddrPort // advertise: listen when not given
	peers             mesh.Peers
}

// parse reads --mesh-listen, --mesh-advertise, --mesh-peers and
// --mesh-registry.
func (o MeshOptions) parse() (meshAddrs, error) {
	var m meshAddrs
	addr, err := netip.ParseAddrPort(o.Listen)
	if err != nil || addr.Addr().IsUnspecified() || addr.Port() == 0 {
		return m, usage.Errorf("--mesh-listen %q: want this relay's own private ip:port (other relays send to it), e.g. 10.0.1.5:3490", o.Listen)
	}
	m.listen = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	m.advertise = m.listen
	if o.Advertise != "" {
		a, err := netip.ParseAddrPort(o.Advertise)
		if err != nil || a.Addr().IsUnspecified() || a.Port() == 0 {
			return m, usage.Errorf("--mesh-advertise %q: want the specific ip:port the other relays reach this one at, e.g. 203.0.113.7:3490", o.Advertise)
		}
		m.advertise = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	}
	if o.Registry != "" {
		if _, err := discovery.ParseRedisURL(o.Registry); err != nil {
			return m, usage.Errorf("--mesh-registry: %v", err)
		}
		return m, nil
	}
	m.peers, err = mesh.ParsePeers(o.Peers)
	if err != nil {
		return m, usage.Errorf("--mesh-peers: %v", err)
	}
	if own, ok := m.peers[uint16(o.Instance)]; ok && own != m.advertise {
		return m, usage.Errorf("--mesh-peers lists instance %d at %v but this relay's mesh address (--mesh-advertise, else --mesh-listen) is %v: make them agree", o.Instance, own, m.advertise)
	}
	return m, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
