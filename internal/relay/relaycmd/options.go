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
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/certs"
	"github.com/keymesh/keymesh/internal/flagenv"
	"github.com/keymesh/keymesh/internal/relay"
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
	rl := &o.RateLimit
	fs.Float64Var(&c.rateLimitPS, "rate-limit", relay.DefaultRate, "RelaySend packets per second each source may send; a source is an IPv4 address or IPv6 /64, whatever the port (0: no per-source limits at all)")
	fs.Float64Var(&rl.Burst, "rate-limit-burst", relay.DefaultBurst, "burst of the per-source RelaySend limit, in packets")
	fs.Float64Var(&rl.ChallengeRate, "challenge-rate", relay.DefaultChallengeRate, "bind challenges per second sent to each source whose address is not proven yet (bounds what spoofed binds reflect)")
	fs.Float64Var(&rl.ChallengeBurst, "challenge-burst", relay.DefaultChallengeBurst, "burst of the per-source challenge limit")
	fs.Float64Var(&rl.BindRate, "bind-rate", relay.DefaultBindRate, "binds per second each source with a proven address may have checked (one signature check each)")
	fs.Float64Var(&rl.BindBurst, "bind-burst", relay.DefaultBindBurst, "burst of the per-source bind limit")
	fs.Float64Var(&rl.BindsPerSecond, "binds-per-second", relay.DefaultBindsPerSecond, "bind signature checks per second over all sources (negative: no cap)")
	fs.IntVar(&rl.MaxSources, "rate-limit-sources", relay.DefaultMaxSources, "sources each per-source limit table holds; when full it forgets idle sources first")
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
	var presenceIP, acmeDomains string
	fs.StringVar(&st.TLSListen, "tls-listen", "", "TCP address of the TLS stream relay for networks without UDP, e.g. :443 (empty: off)")
	fs.StringVar(&st.KeyFile, "key", "relay.key", "relay identity key file (created if missing); without ACME the stream relay's certificate is made from it and peers pin it")
	fs.StringVar(&presenceIP, "stream-presence-ip", "", "public IP of the UDP sockets the stream relay gives each tunnel (default: the --tls-listen host)")
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
	case !o.RateLimit.Disabled && o.RateLimit.Burst < 1:
		return usageErr("--rate-limit-burst %v: give at least 1 packet", o.RateLimit.Burst)
	case !o.RateLimit.Disabled && (o.RateLimit.ChallengeRate <= 0 || o.RateLimit.ChallengeBurst < 1):
		return usageErr("--challenge-rate %v, --challenge-burst %v: give a rate above 0 and a burst of at least 1", o.RateLimit.ChallengeRate, o.RateLimit.ChallengeBurst)
	case !o.RateLimit.Disabled && (o.RateLimit.BindRate <= 0 || o.RateLimit.BindBurst < 1):
		return usageErr("--bind-rate %v, --bind-burst %v: give a rate above 0 and a burst of at least 1", o.RateLimit.BindRate, o.RateLimit.BindBurst)
	case o.RateLimit.BindsPerSecond == 0:
		return usageErr("--binds-per-second 0 would refuse every bind: give a positive number, or a negative one for no cap")
	case o.RateLimit.MaxSources < 1:
		return usageErr("--rate-limit-sources %d: give at least 1", o.RateLimit.MaxSources)
	case o.TURN.enabled() && o.TURN.SecretFile == "":
		return usageErr("TURN is on but --turn-secret-file is missing: create one with `head -c 32 /dev/urandom | base64 > turn.secret && chmod 600 turn.secret`")
	case o.TURN.enabled() && (o.TURN.Sockets < 1 || o.TURN.Sockets > 256):
		return usageErr("--turn-sockets %d: give 1 to 256", o.TURN.Sockets)
	case o.UDPBuffer < 0:
		return usageErr("--udp-buffer %d: give bytes, or 0 for the system default", o.UDPBuffer)
	case o.Listen == "":
		return usageErr("--listen is empty: give the ticket relay's UDP address, e.g. :3479")
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
