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
	"github.com/keymesh/keymesh/internal/flagenv"
	"github.com/keymesh/keymesh/internal/relay"
	"github.com/keymesh/keymesh/internal/streamrelay"
	"github.com/keymesh/keymesh/internal/turnrelay"
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

	// AllowDestinations are ranges the relay sends to for strangers
	// although addrpolicy refuses them (loopback, private, link-local...):
	// an operator's own network, a lab.
	AllowDestinations []netip.Prefix

	Ticket    TicketOptions
	RateLimit relay.RateLimit
	TURN      TURNOptions
	Stream    StreamOptions

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
	RelayIP    netip.Addr // address allocations use; default the listen IP
	Sockets    int        // SO_REUSEPORT UDP sockets
	Quota      int        // live allocations per user (0: default, <0: none)
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

// errUsage marks errors in how the relay was invoked (exit status 2).
var errUsage = errors.New("usage")

// usageErr formats a usage error: one line saying what is wrong and how to
// fix it.
func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
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
	fs.Float64Var(&c.rateLimitPS, "rate-limit", relay.DefaultRate, "packets per second each source address and port may send (0: no per-source limit)")
	fs.Float64Var(&o.RateLimit.Burst, "rate-limit-burst", relay.DefaultBurst, "burst of the per-source limit, in packets")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	fs.BoolVar(&c.genKey, "gen-ticket-key", false, "print a new ticket key line and exit (rotate: put the new line first, keep the old one second until its tickets expire)")
	fs.UintVar(&c.genKeyID, "ticket-key-id", 1, "key id (0-255) of the line --gen-ticket-key prints")

	t := &o.TURN
	var relayIP string
	fs.StringVar(&t.Listen, "turn-listen", "", "UDP address of the TURN server (empty: off)")
	fs.StringVar(&t.TCPListen, "turn-tcp-listen", "", "TCP address of the TURN server (empty: off)")
	fs.StringVar(&t.SecretFile, "turn-secret-file", "", "file holding the TURN REST API shared secret (needed when TURN is on)")
	fs.StringVar(&t.Realm, "turn-realm", turnrelay.DefaultRealm, "TURN realm")
	fs.StringVar(&relayIP, "turn-relay-ip", "", "public IP that TURN allocations use and advertise (needed when --turn-listen is a wildcard address)")
	fs.IntVar(&t.Sockets, "turn-sockets", 1, "number of SO_REUSEPORT UDP sockets on --turn-listen")
	fs.IntVar(&t.Quota, "turn-quota", turnrelay.DefaultMaxAllocationsPerUser, "live TURN allocations per user (negative: no limit)")
	st := &o.Stream
	var presenceIP, advertiseIP, acmeDomains, ownPorts, allowDest string
	fs.StringVar(&allowDest, "allow-destinations", "", "CIDR ranges (comma-separated) the relay may send to for peers although they are refused by default (loopback, private, CGNAT, link-local incl. 169.254.169.254, multicast, reserved, this host's own addresses), e.g. 10.1.0.0/16")
	fs.StringVar(&st.TLSListen, "tls-listen", "", "TCP address of the TLS stream relay for networks without UDP, e.g. :443 (empty: off)")
	fs.StringVar(&st.KeyFile, "key", "relay.key", "relay identity key file (created if missing); without ACME the stream relay's certificate is made from it and peers pin it")
	fs.StringVar(&presenceIP, "stream-presence-ip", "", "IP the stream relay's per-tunnel UDP sockets bind to: the public one, a private one or 0.0.0.0 (default: the --tls-listen host)")
	fs.StringVar(&advertiseIP, "stream-advertise-ip", "", "public IP tunnels are told their UDP presence has, when it is not on the interface (AWS); needed when --stream-presence-ip is private or unspecified (default: --stream-presence-ip)")
	fs.StringVar(&ownPorts, "stream-own-ports", "", "UDP ports (comma-separated) of other public keymesh services on this host, e.g. a rendezvous on 3478, that tunnels may reach at this host's addresses (the ticket relay's and TURN's ports always are; every other port of the host is refused)")
	fs.IntVar(&st.Limits.MaxTunnels, "stream-max-tunnels", streamrelay.DefaultMaxTunnels, "open stream tunnels, those in their handshake included")
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
	fs.Float64Var(&st.Limits.ProbeRate, "stream-probe-rate", streamrelay.DefaultProbeRate, "datagrams per second a stream tunnel may send to a destination whose address has sent it nothing (registering, binding, punching); answered destinations get --stream-rate")
	fs.Float64Var(&st.Limits.ProbeBurst, "stream-probe-burst", streamrelay.DefaultProbeBurst, "burst of --stream-probe-rate, in datagrams")
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
		return nil, usageErr("%s (see relay --help)", firstLine(err.Error()))
	}
	if fs.NArg() > 0 {
		return nil, usageErr("unexpected argument %q: the relay takes only flags (see relay --help)", fs.Arg(0))
	}
	if c.version || c.genKey {
		if c.genKeyID > 255 {
			return nil, usageErr("--ticket-key-id %d: a key id is 0 to 255", c.genKeyID)
		}
		return c, nil
	}
	if relayIP != "" {
		ip, err := netip.ParseAddr(relayIP)
		if err != nil {
			return nil, usageErr("--turn-relay-ip %q is not an IP address", relayIP)
		}
		t.RelayIP = ip
	}
	if presenceIP != "" {
		ip, err := netip.ParseAddr(presenceIP)
		if err != nil {
			return nil, usageErr("--stream-presence-ip %q is not an IP address", presenceIP)
		}
		st.PresenceIP = ip
	}
	if advertiseIP != "" {
		ip, err := netip.ParseAddr(advertiseIP)
		if err != nil || ip.IsUnspecified() {
			return nil, usageErr("--stream-advertise-ip %q is not a specific IP address (give the public IP, e.g. 203.0.113.7)", advertiseIP)
		}
		st.AdvertiseIP = ip
	}
	for _, f := range splitList(ownPorts) {
		p, err := strconv.ParseUint(f, 10, 16)
		if err != nil || p == 0 {
			return nil, usageErr("--stream-own-ports: %q is not a port (give e.g. 3478,3480)", f)
		}
		st.OwnPorts = append(st.OwnPorts, uint16(p))
	}
	allow, err := addrpolicy.ParsePrefixes(allowDest)
	if err != nil {
		return nil, usageErr("--allow-destinations: %v", err)
	}
	o.AllowDestinations = allow
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
		return usageErr("--reuseport %d: give 1 to 256 sockets", o.ReusePort)
	case o.Ticket.TTL < time.Second:
		return usageErr("--ticket-ttl %v: give at least 1s (default %v)", o.Ticket.TTL, relay.DefaultTicketTTL)
	case o.Ticket.KeyFile != "" && o.Ticket.Dev:
		return usageErr("--dev and --ticket-key-file both given: --dev is for running without a key file; drop one")
	case !o.RateLimit.Disabled && o.RateLimit.Burst < relay.DefaultBindCost:
		return usageErr("--rate-limit-burst %v: give at least %d (a bind takes %d)", o.RateLimit.Burst, relay.DefaultBindCost, relay.DefaultBindCost)
	case o.TURN.enabled() && o.TURN.SecretFile == "":
		return usageErr("TURN is on but --turn-secret-file is missing: create one with `head -c 32 /dev/urandom | base64 > turn.secret && chmod 600 turn.secret`")
	case o.TURN.enabled() && (o.TURN.Sockets < 1 || o.TURN.Sockets > 256):
		return usageErr("--turn-sockets %d: give 1 to 256", o.TURN.Sockets)
	case o.UDPBuffer < 0:
		return usageErr("--udp-buffer %d: give bytes, or 0 for the system default", o.UDPBuffer)
	case o.Stream.enabled() && o.Stream.noAdvertise():
		return usageErr("--tls-listen %q with no specific --stream-presence-ip: give --stream-advertise-ip, the public IP tunnels are reached at", o.Stream.TLSListen)
	case o.Stream.enabled() && o.Stream.Limits.invalid() != "":
		return usageErr("--stream-%s must be above 0 (see relay --help for its default)", o.Stream.Limits.invalid())
	case o.Stream.enabled() && o.Stream.MaxHeaderBytes < 1024:
		return usageErr("--stream-max-header-bytes %d: give at least 1024 (default %d)", o.Stream.MaxHeaderBytes, streamrelay.DefaultMaxHeaderBytes)
	case o.Listen == "":
		return usageErr("--listen is empty: give the ticket relay's UDP address, e.g. :3479")
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
