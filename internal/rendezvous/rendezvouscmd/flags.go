// Package rendezvouscmd is the rendezvous command: its flags (each also a
// KEYMESH_* environment variable) and the wiring of key file, secrets,
// registry, sockets, server and admin endpoint. cmd/rendezvous only calls
// Main.
package rendezvouscmd

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/flagenv"
	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/rendezvous"
)

// Options are the command's settings.
type Options struct {
	Listen           string
	KeyFile          string
	PublicAddr       string
	Admin            string
	Relays           []string
	StreamRelays     []string
	TURNSecretFile   string
	TURNURIs         []string
	CookieSecretFile string
	JoinTokenFile    string
	Registry         string
	RedisURL         string
	TTL, Refresh     time.Duration
	Instance         string
	ReusePort        int
	AltListen        string
	RateLimit        float64
	RateBurst        int
	ReportRate       float64
	ReportBurst      int
	LogFormat        string
	LogLevel         string
	Version          bool
}

// errUsage marks a bad flag (exit code 2).
var errUsage = errors.New("usage")

// ParseFlags parses args (and the environment, through lookup) into
// Options. Errors are one line.
func ParseFlags(args []string, stderr io.Writer, lookup func(string) (string, bool)) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("rendezvous", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported in one line by Main
	fs.Usage = func() {}
	var relays, streams, turnURIs flagenv.Strings
	fs.StringVar(&o.Listen, "listen", ":3478", "UDP address to serve (STUN and the rendezvous protocol)")
	fs.StringVar(&o.KeyFile, "key", "rendezvous.key", "server identity key file (created with mode 0600 if missing)")
	fs.StringVar(&o.PublicAddr, "public-addr", "", "host (or host:port) shown in the connect string; default the listen host or a local address")
	fs.StringVar(&o.Admin, "admin", "127.0.0.1:9090", "admin HTTP address (/metrics, /healthz, /readyz); empty disables")
	fs.StringVar(&o.AltListen, "alt-listen", "", "second ip:port of this host for RFC 5780 NAT behaviour discovery (CHANGE-REQUEST); needs a specific --listen address")
	fs.Var(&relays, "relay", "relay UDP address advertised to peers (repeatable)")
	fs.Var(&streams, "stream-relay", "stream relay URL advertised to peers (repeatable)")
	fs.StringVar(&o.TURNSecretFile, "turn-secret-file", "", "file whose text (trimmed) is the TURN REST API shared secret, as coturn's static-auth-secret and the relay's --turn-secret-file; when set, peers get TURN credentials")
	fs.Var(&turnURIs, "turn-uri", "TURN URI advertised with the credentials, e.g. turn:relay.example:3478 (repeatable)")
	fs.StringVar(&o.CookieSecretFile, "cookie-secret-file", "", "cookie secret shared by every instance behind one address (default: random per process)")
	fs.StringVar(&o.JoinTokenFile, "join-token-file", "", "require this join token in every registration")
	fs.StringVar(&o.Registry, "registry", "memory", "peer registry: memory (one instance) or redis (shared by instances)")
	fs.StringVar(&o.RedisURL, "redis", "", "Redis URL for --registry redis, e.g. redis://127.0.0.1:6379/0")
	fs.DurationVar(&o.TTL, "ttl", rendezvous.DefaultTTL, "registration lifetime")
	fs.DurationVar(&o.Refresh, "refresh", rendezvous.DefaultRefresh, "how often peers re-register (keep it under 30 s: NAT mappings)")
	fs.StringVar(&o.Instance, "instance", defaultInstance(), "instance name reported to peers")
	fs.IntVar(&o.ReusePort, "reuseport", 1, "number of SO_REUSEPORT sockets to serve on the listen address (1: one socket; with --registry redis it too has SO_REUSEPORT, so several instances on one host can share the address)")
	fs.Float64Var(&o.RateLimit, "rate-limit", rendezvous.DefaultRate, "datagrams per second allowed per source address (IPv6: per /64); negative disables")
	fs.IntVar(&o.RateBurst, "rate-burst", rendezvous.DefaultBurst, "burst allowed per source address")
	fs.Float64Var(&o.ReportRate, "report-rate", rendezvous.DefaultReportRate, "peers' outcome reports counted per second per source address (IPv6: per /64); negative counts none")
	fs.IntVar(&o.ReportBurst, "report-burst", rendezvous.DefaultReportBurst, "burst of outcome reports counted per source address")
	fs.StringVar(&o.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&o.Version, "version", false, "print the version and exit")
	if err := flagenv.ParseEnv(fs, args, lookup); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			flagenv.Usage(fs)()
			return o, err
		}
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected argument %q (all settings are flags; see --help)", errUsage, fs.Arg(0))
	}
	o.Relays, o.StreamRelays, o.TURNURIs = relays, streams, turnURIs
	return o, o.check()
}

func (o *Options) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
	}
	switch {
	case o.Listen == "":
		return bad("--listen is empty: give a UDP address such as :3478")
	case o.KeyFile == "":
		return bad("--key is empty: give the path of the server key file")
	case o.ReusePort < 1:
		return bad("--reuseport %d: want 1 or more sockets", o.ReusePort)
	case o.Registry != "memory" && o.Registry != "redis":
		return bad("--registry %q: want memory or redis", o.Registry)
	case o.Registry == "redis" && o.RedisURL == "":
		return bad("--registry redis needs --redis URL (e.g. redis://127.0.0.1:6379/0)")
	case o.Registry == "memory" && o.RedisURL != "":
		return bad("--redis is set but --registry is memory: add --registry redis")
	case o.Refresh <= 0 || o.TTL <= o.Refresh:
		return bad("--refresh %v must be positive and below --ttl %v", o.Refresh, o.TTL)
	case o.TTL > 65535*time.Second:
		return bad("--ttl %v: at most 65535s", o.TTL)
	case o.RateLimit == 0:
		return bad("--rate-limit 0 would drop everything: give a rate, or a negative value to disable")
	case o.ReportRate == 0:
		return bad("--report-rate 0: give a rate, or a negative value to count no outcome reports")
	case o.ReportBurst < 1:
		return bad("--report-burst %d: want 1 or more", o.ReportBurst)
	case len(o.TURNURIs) > 0 && o.TURNSecretFile == "":
		return bad("--turn-uri needs --turn-secret-file to hand out credentials")
	}
	if _, err := obs.NewLogger(io.Discard, o.LogFormat, o.LogLevel); err != nil {
		return bad("%v", err)
	}
	return nil
}

func defaultInstance() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "rendezvous"
	}
	if i := strings.IndexByte(h, '.'); i > 0 {
		h = h[:i]
	}
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}
