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
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/keymesh/keymesh/internal/addrpolicy"
	"github.com/keymesh/keymesh/internal/discovery"
	"github.com/keymesh/keymesh/internal/flagenv"
	"github.com/keymesh/keymesh/internal/mesh"
	"github.com/keymesh/keymesh/internal/obs"
	"github.com/keymesh/keymesh/internal/rendezvous"

	"github.com/keymesh/keymesh/internal/cmd/usage"
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
	// Snapshot and SnapshotEvery are --registry-snapshot and
	// --registry-snapshot-every.
	Snapshot       string
	SnapshotEvery  time.Duration
	TTL, Refresh   time.Duration
	Instance       string
	MeshListen     string
	MeshAdvertise  string
	MeshRegistry   string
	PeerSecretFile string
	MeshRate       float64
	MeshUnverified float64
	MeshAllow      []netip.Prefix
	ReusePort      int
	AltListen      string
	RateLimit      float64
	RateBurst      int
	RateSources    int
	STUNRate       float64
	STUNBurst      int
	KeyMissRate    float64
	// StreamRelaySources is --stream-relay-sources, nil when not given
	// (then the IP hosts of the --stream-relay URLs).
	StreamRelaySources []netip.Prefix
	StreamRelayFactor  float64
	KeyMissBudget      float64
	RegisterRate       float64
	RegisterBurst      int
	PunchRate          float64
	PunchBurst         int
	UDPBuffer          int
	KeyCache           int
	ReplayCache        int
	MaxRecords         int
	ReportRate         float64
	ReportBurst        int
	LogFormat          string
	LogLevel           string
	Version            bool
}

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
	fs.StringVar(&o.MeshListen, "mesh-listen", "", "this instance's private ip:port for the mesh between instances (needs --peer-secret-file and --registry redis): registrations record it (or --mesh-advertise) as the peer's home, and a Punch for a peer homed on another instance leaves through that instance (empty: off, every Punch leaves from here)")
	fs.StringVar(&o.MeshAdvertise, "mesh-advertise", "", "the ip:port other instances reach this one's mesh at, recorded as its peers' home and named in its heartbeats, when --mesh-listen is a private address mapped 1:1 to a public one (e.g. the instance's public IPv4 on AWS, where regions' private networks do not reach each other); its packets to other instances must leave from it (default: the --mesh-listen address)")
	fs.StringVar(&o.MeshRegistry, "mesh-registry", "", "Redis URL (usually the --redis one) where the rendezvous instances list their mesh addresses: each gets heartbeats, and mesh messages are accepted only from them and --mesh-allow (empty: no list; any source when --mesh-allow is empty too)")
	var meshAllow string
	fs.StringVar(&meshAllow, "mesh-allow", "", "addresses or CIDR ranges (comma-separated) the other instances' mesh messages come from, e.g. the deployment's private ranges 10.0.0.0/8: a mesh message from anywhere else is dropped before its tag is checked (empty: any source, checked by rate and tag alone)")
	fs.Float64Var(&o.MeshRate, "mesh-rate-limit", mesh.DefaultRate, "authentic mesh messages per second handed on from each source address, charged once their tag verified, so a flood spoofed from an instance's address spends none of it; heartbeats are free (negative: no limit)")
	fs.Float64Var(&o.MeshUnverified, "mesh-unverified-rate", mesh.DefaultUnverifiedRate, "tag checks per second, over all sources, of mesh messages from a sender not yet authenticated at their source address and port (a stranger's forgeries, each instance's first message); messages of known instances are checked without it (negative: no cap)")
	fs.StringVar(&o.PeerSecretFile, "peer-secret-file", "", "secret shared by every instance of the deployment; keys the mesh (HMAC) between instances")
	fs.IntVar(&o.ReusePort, "reuseport", 1, "number of SO_REUSEPORT sockets to serve on the listen address (1: one socket; with --registry redis it too has SO_REUSEPORT, so several instances on one host can share the address)")
	fs.Float64Var(&o.RateLimit, "rate-limit", rendezvous.DefaultRate, "requests per second allowed per source address (IPv6: per /64) once they proved the address's cookie, and as many cookie replies from a bucket of their own, so a flood spoofed from a peer's address spends nothing of the peer's budget; negative disables")
	fs.IntVar(&o.RateBurst, "rate-burst", rendezvous.DefaultBurst, "burst allowed per source address (each bucket)")
	fs.IntVar(&o.RateSources, "rate-sources", rendezvous.DefaultRateSources, "source addresses (IPv6: /64s) each per-source limit tracks at once (about 48 bytes each); beyond it idle sources are forgotten first")
	fs.Float64Var(&o.STUNRate, "stun-rate", rendezvous.DefaultSTUNRate, "STUN Binding answers per second per source address (IPv6: per /64), main and --alt-listen sockets together; negative disables")
	fs.IntVar(&o.STUNBurst, "stun-burst", rendezvous.DefaultSTUNBurst, "burst of STUN answers per source address")
	fs.Float64Var(&o.KeyMissRate, "key-miss-rate", rendezvous.DefaultKeyMissRate, "X25519s per second per source address for sender keys not in the key cache, after the request proved its cookie (burst twice that); negative disables")
	fs.Float64Var(&o.KeyMissBudget, "key-miss-budget", rendezvous.DefaultKeyMissBudget, "X25519s per second for connect targets whose keys are not cached (peers registered through other instances), all connects together; negative disables")
	fs.Float64Var(&o.RegisterRate, "register-rate", rendezvous.DefaultRegisterRate, "registrations of peers new to this instance per second per source address (IPv6: per /64); negative disables")
	fs.IntVar(&o.RegisterBurst, "register-burst", rendezvous.DefaultRegisterBurst, "burst of new peers' registrations per source address")
	fs.Float64Var(&o.PunchRate, "punch-rate", rendezvous.DefaultPunchRate, "Punches per second one peer is sent, all requesters together (over it a Connect gets its reply but the peer no Punch); negative disables")
	fs.IntVar(&o.PunchBurst, "punch-burst", rendezvous.DefaultPunchBurst, "burst of Punches one peer is sent")
	fs.IntVar(&o.UDPBuffer, "udp-buffer", 4<<20, "receive/send buffer of each rendezvous socket in bytes, capped by net.core.rmem_max/wmem_max unless the process may raise it (0: system default)")
	var streamSources string
	fs.StringVar(&streamSources, "stream-relay-sources", "", "addresses or CIDR ranges (comma-separated) TLS stream relays' tunnels come from, each standing for all its tunnelled peers, one port per tunnel: there a request that proved its address and port's cookie gets --rate-limit per tunnel, and cookie replies, --stun-rate, --key-miss-rate and --register-rate and their bursts are multiplied by --stream-relay-factor (default: the hosts of the --stream-relay URLs that are IP addresses)")
	fs.Float64Var(&o.StreamRelayFactor, "stream-relay-factor", rendezvous.DefaultStreamRelayFactor, "multiplier of the per-source limits for stream relay addresses (see --stream-relay-sources); each tunnel is held to the stream relay's --stream-server-rate")
	fs.IntVar(&o.KeyCache, "max-cached-keys", rendezvous.DefaultKeyCache, "peers' shared keys kept in the key cache (each miss costs an X25519); keys used once are forgotten first")
	fs.IntVar(&o.ReplayCache, "max-replay-nonces", rendezvous.DefaultReplayCache, "message nonces remembered against replays (about 40 bytes each); when full, the stamps furthest from now are forgotten and refused from then on")
	fs.StringVar(&o.Snapshot, "registry-snapshot", "", "`file` the memory registry is saved to (every --registry-snapshot-every and on shutdown) and restored from at start, authenticated under the server key, so a restart keeps the registrations and peers need not register again (empty: off)")
	fs.DurationVar(&o.SnapshotEvery, "registry-snapshot-every", time.Second, "how often the memory registry is saved to --registry-snapshot when it changed (each save writes the whole registry, about 250 bytes a peer)")
	fs.IntVar(&o.MaxRecords, "max-records", discovery.DefaultMaxRecords, "registry records kept, memory and Redis (about 250 bytes a typical record, 1.7 KB at most); beyond it the records closest to expiry are evicted, refreshes of registered peers are never refused")
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
		return o, usage.Errorf("%v", err)
	}
	if fs.NArg() > 0 {
		return o, usage.Errorf("unexpected argument %q (all settings are flags)", fs.Arg(0))
	}
	o.Relays, o.StreamRelays, o.TURNURIs = relays, streams, turnURIs
	if streamSources != "" {
		p, err := addrpolicy.ParsePrefixes(streamSources)
		if err != nil {
			return o, usage.Errorf("--stream-relay-sources: %v", err)
		}
		o.StreamRelaySources = p
	}
	if meshAllow != "" {
		p, err := addrpolicy.ParsePrefixes(meshAllow)
		if err != nil {
			return o, usage.Errorf("--mesh-allow: %v", err)
		}
		o.MeshAllow = p
	}
	return o, o.check()
}

func (o *Options) check() error {
	bad := func(format string, a ...any) error {
		return usage.Errorf(format, a...)
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
	case o.Registry != "memory" && o.Snapshot != "":
		return bad("--registry-snapshot saves the memory registry; Redis keeps its own (see its persistence settings)")
	case o.SnapshotEvery <= 0:
		return bad("--registry-snapshot-every %v: want more than 0", o.SnapshotEvery)
	case o.Refresh <= 0 || o.TTL <= o.Refresh:
		return bad("--refresh %v must be positive and below --ttl %v", o.Refresh, o.TTL)
	case o.TTL > 65535*time.Second:
		return bad("--ttl %v: at most 65535s", o.TTL)
	case o.RateLimit == 0:
		return bad("--rate-limit 0 would drop everything: give a rate, or a negative value to disable")
	case o.STUNRate == 0:
		return bad("--stun-rate 0 would answer no STUN: give a rate, or a negative value to disable")
	case o.KeyMissRate == 0 || o.KeyMissBudget == 0:
		return bad("--key-miss-rate and --key-miss-budget 0 would admit no new peer: give a rate, or a negative value to disable")
	case o.RegisterRate == 0:
		return bad("--register-rate 0 would refuse every registration: give a rate, or a negative value to disable")
	case o.PunchRate == 0:
		return bad("--punch-rate 0 would send no Punch: give a rate, or a negative value to disable")
	case o.RateBurst < 1 || o.STUNBurst < 1 || o.RegisterBurst < 1 || o.PunchBurst < 1:
		return bad("--rate-burst, --stun-burst, --register-burst and --punch-burst must be at least 1")
	case o.UDPBuffer < 0:
		return bad("--udp-buffer %d: give bytes, or 0 for the system default", o.UDPBuffer)
	case o.KeyCache < 1 || o.ReplayCache < 1 || o.MaxRecords < 1 || o.RateSources < 1:
		return bad("--max-cached-keys, --max-replay-nonces, --max-records and --rate-sources must be at least 1")
	case o.StreamRelayFactor < 1:
		return bad("--stream-relay-factor %v: give at least 1 (default %v)", o.StreamRelayFactor, rendezvous.DefaultStreamRelayFactor)
	case o.MeshRate == 0:
		return bad("--mesh-rate-limit 0 would drop every forward: give a rate, or a negative value for no limit")
	case o.MeshUnverified == 0:
		return bad("--mesh-unverified-rate 0 would never hear a new instance: give a rate, or a negative value for no cap")
	case o.MeshListen != "" && o.PeerSecretFile == "":
		return bad("--mesh-listen needs --peer-secret-file, the secret the instances share")
	case len(o.MeshAllow) > 0 && o.MeshListen == "":
		return bad("--mesh-allow needs --mesh-listen")
	case (o.MeshAdvertise != "" || o.MeshRegistry != "") && o.MeshListen == "":
		return bad("--mesh-advertise and --mesh-registry need --mesh-listen")
	case o.MeshListen != "" && o.Registry != "redis":
		return bad("--mesh-listen needs a shared registry: add --registry redis")
	case o.ReportRate == 0:
		return bad("--report-rate 0: give a rate, or a negative value to count no outcome reports")
	case o.ReportBurst < 1:
		return bad("--report-burst %d: want 1 or more", o.ReportBurst)
	case len(o.TURNURIs) > 0 && o.TURNSecretFile == "":
		return bad("--turn-uri needs --turn-secret-file to hand out credentials")
	}
	if o.MeshListen != "" {
		if a, err := netip.ParseAddrPort(o.MeshListen); err != nil || a.Addr().IsUnspecified() || a.Port() == 0 {
			return bad("--mesh-listen %q: want this instance's own private ip:port (other instances send to it), e.g. 10.0.1.5:3490", o.MeshListen)
		}
	}
	if o.MeshAdvertise != "" {
		if a, err := netip.ParseAddrPort(o.MeshAdvertise); err != nil || a.Addr().IsUnspecified() || a.Port() == 0 {
			return bad("--mesh-advertise %q: want the specific ip:port other instances reach this one at, e.g. 203.0.113.7:3490", o.MeshAdvertise)
		}
	}
	if o.MeshRegistry != "" {
		if _, err := discovery.ParseRedisURL(o.MeshRegistry); err != nil {
			return bad("--mesh-registry: %v", err)
		}
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
