package relaycmd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keymesh/keymesh/internal/certs"
	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/sockopt"
	"github.com/keymesh/keymesh/internal/streamclient"
	"github.com/keymesh/keymesh/internal/streamrelay"

	"github.com/keymesh/keymesh/internal/cmd/usage"
)

// StreamOptions configure the TCP/TLS stream relay (a WebSocket tunnel per
// peer whose network blocks UDP); it runs when TLSListen is set.
type StreamOptions struct {
	// TLSListen is the TCP address (443 in deployment).
	TLSListen string
	// KeyFile is the relay's identity; without ACME its certificate is
	// made from it and peers pin its key.
	KeyFile string
	// PresenceIP is the address the tunnels' UDP sockets bind to (public,
	// private or unspecified); default the TLSListen host.
	PresenceIP netip.Addr
	// AdvertiseIP is the public address tunnels are told their presence
	// has; default PresenceIP.
	AdvertiseIP netip.Addr
	// OwnPorts are UDP ports of other public keymesh services on this
	// host (a rendezvous) that tunnels may reach at its addresses; the
	// ticket relay's and TURN's ports are added by Run.
	OwnPorts []uint16
	// Servers are keymesh servers elsewhere (rendezvous, ticket relays)
	// that each tunnel may send only Limits.ServerRate; the ticket
	// relay's port and OwnPorts on this host count as servers too.
	Servers []netip.AddrPort
	// MaxHeaderBytes bounds an HTTP request's header.
	MaxHeaderBytes int
	// Limits are the stream relay's limits (only those fields of
	// streamrelay.Config are read).
	Limits StreamLimits
	// ACME settings (certs.Config); Domains empty means self-signed.
	ACME certs.Config
}

func (o StreamOptions) enabled() bool { return o.TLSListen != "" }

// noAdvertise reports whether no address to advertise follows from the
// options: no --stream-advertise-ip, and the presence (given, or the
// --tls-listen host) is not a specific IP.
func (o StreamOptions) noAdvertise() bool {
	if o.AdvertiseIP.IsValid() {
		return false
	}
	p := o.PresenceIP
	if !p.IsValid() {
		host, _, err := net.SplitHostPort(o.TLSListen)
		if err != nil {
			return false // startStream says what is wrong with --tls-listen
		}
		p, _ = netip.ParseAddr(host)
	}
	return !p.IsValid() || p.IsUnspecified()
}

// StreamLimits are the stream relay's limits, each a --stream-* flag; see
// streamrelay.Config for their meaning.
type StreamLimits struct {
	MaxTunnels, MaxTunnelsPerIP, MaxTunnelsPerNet, Burst, MaxDestinations int
	ByteRate, IPByteRate, UnsolicitedBurst                                int
	OpenRate, OpenBurst, Rate, UnsolicitedRate                            float64
	ProbeRate, ProbeBurst, ServerRate, ServerBurst                        float64
	HandshakeTimeout, IdleTimeout, WriteTimeout, DestinationTTL           time.Duration
}

// invalid names the first limit that is not above 0 (its flag without
// the --stream- prefix), or "".
func (l StreamLimits) invalid() string {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"max-tunnels", l.MaxTunnels > 0}, {"max-tunnels-per-ip", l.MaxTunnelsPerIP > 0}, {"max-tunnels-per-net", l.MaxTunnelsPerNet > 0},
		{"burst", l.Burst > 0}, {"max-destinations", l.MaxDestinations > 0},
		{"open-rate", l.OpenRate > 0}, {"open-burst", l.OpenBurst >= 1}, {"rate", l.Rate > 0},
		{"byte-rate", l.ByteRate > 0}, {"ip-byte-rate", l.IPByteRate > 0},
		{"probe-rate", l.ProbeRate > 0}, {"probe-burst", l.ProbeBurst >= 1},
		{"unsolicited-rate", l.UnsolicitedRate > 0}, {"unsolicited-burst", l.UnsolicitedBurst >= 1},
		{"server-rate", l.ServerRate > 0}, {"server-burst", l.ServerBurst >= 1},
		{"handshake-timeout", l.HandshakeTimeout > 0}, {"idle-timeout", l.IdleTimeout > 0},
		{"write-timeout", l.WriteTimeout > 0}, {"destination-timeout", l.DestinationTTL > 0},
	} {
		if !c.ok {
			return c.name
		}
	}
	return ""
}

// startStream starts the stream relay, returning its URL (with the key pin
// when the certificate is self-signed).
// allow are the operator's allowed destinations; the ticket relay's and
// TURN's UDP ports in addrs join o.OwnPorts.
func startStream(ctx context.Context, o StreamOptions, allow []netip.Prefix, reg prometheus.Registerer, log *slog.Logger, addrs *Addrs) (string, error) {
	if !o.enabled() {
		return "", nil
	}
	host, _, err := net.SplitHostPort(o.TLSListen)
	if err != nil {
		return "", usage.Errorf("--tls-listen %q: want host:port, e.g. :443", o.TLSListen)
	}
	presence := o.PresenceIP
	if !presence.IsValid() {
		ip, perr := netip.ParseAddr(host)
		if perr != nil || (ip.IsUnspecified() && !o.AdvertiseIP.IsValid()) {
			return "", usage.Errorf("--tls-listen %q has no specific address: give --stream-advertise-ip, the public IP tunnels are reached at (and --stream-presence-ip if they should bind a specific one)", o.TLSListen)
		}
		presence = ip
	}
	advertise := o.AdvertiseIP
	if !advertise.IsValid() {
		if presence.IsUnspecified() {
			return "", usage.Errorf("--stream-presence-ip %v is unspecified: give --stream-advertise-ip, the public IP tunnels are reached at", presence)
		}
		advertise = presence
	}
	ownPorts := append([]uint16(nil), o.OwnPorts...)
	serverPorts := append([]uint16(nil), o.OwnPorts...)
	if ua, ok := addrs.UDP.(*net.UDPAddr); ok {
		serverPorts = append(serverPorts, uint16(ua.Port))
	}
	for _, a := range []net.Addr{addrs.UDP, addrs.TURNUDP} {
		if ua, ok := a.(*net.UDPAddr); ok {
			ownPorts = append(ownPorts, uint16(ua.Port))
		}
	}
	cfg := o.ACME
	cfg.Logger = log
	if !cfg.ACME() {
		if o.KeyFile == "" {
			return "", usage.Errorf("the stream relay needs --key (its identity; peers pin it) or ACME settings (--acme-domain)")
		}
		id, created, err := crypto.LoadOrCreateKeyFile(o.KeyFile)
		if err != nil {
			return "", usage.Errorf("%v", err)
		}
		if created {
			log.Info("created relay identity", "key", o.KeyFile)
		}
		cfg.Identity = id
	}
	tlsConf, err := certs.TLSConfig(ctx, cfg)
	if err != nil {
		return "", err
	}
	l := o.Limits
	srv, err := streamrelay.New(streamrelay.Config{
		PresenceIP: presence, AdvertiseIP: advertise,
		AllowDestinations: allow, OwnPorts: ownPorts,
		MaxTunnels: l.MaxTunnels, MaxTunnelsPerIP: l.MaxTunnelsPerIP, MaxTunnelsPerNet: l.MaxTunnelsPerNet, OpenRate: l.OpenRate, OpenBurst: l.OpenBurst,
		HandshakeTimeout: l.HandshakeTimeout, IdleTimeout: l.IdleTimeout, WriteTimeout: l.WriteTimeout,
		Rate: l.Rate, Burst: l.Burst, ByteRate: float64(l.ByteRate), IPByteRate: float64(l.IPByteRate),
		MaxDestinations: l.MaxDestinations, DestinationTTL: l.DestinationTTL, ProbeRate: l.ProbeRate, ProbeBurst: l.ProbeBurst,
		UnsolicitedRate: l.UnsolicitedRate, UnsolicitedBurst: l.UnsolicitedBurst,
		ServerAddrs: o.Servers, ServerPorts: serverPorts, ServerRate: l.ServerRate, ServerBurst: l.ServerBurst,
		Logger: log.With("service", "stream"), Registerer: reg,
	})
	if err != nil {
		return "", usage.Errorf("%v", err)
	}
	ln, err := sockopt.ListenTCP(ctx, o.TLSListen, false)
	if err != nil {
		return "", fmt.Errorf("stream relay: %w", err)
	}
	addrs.Stream = ln.Addr()
	hs := streamHTTPServer(srv, tlsConf, o, log)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	go func() {
		if err := hs.Serve(tls.NewListener(srv.Listener(ln), tlsConf)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("stream relay stopped", "err", err)
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	urlHost := advertise.String()
	if len(cfg.Domains) > 0 {
		urlHost = cfg.Domains[0]
	}
	url := fmt.Sprintf("wss://%s%s", net.JoinHostPort(urlHost, fmt.Sprint(port)), streamclient.Path)
	if cfg.Identity != nil {
		url += "#" + cfg.Identity.ID().String()
	}
	return url, nil
}

// streamHTTPServer bounds what a connection that is not (yet) a tunnel may
// hold: the TLS handshake and the request headers get HandshakeTimeout
// (net/http applies ReadHeaderTimeout to the handshake too), an idle
// keep-alive connection as long, a header MaxHeaderBytes. A tunnel, once
// upgraded, has the stream relay's own timeouts.
func streamHTTPServer(h http.Handler, tlsConf *tls.Config, o StreamOptions, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: o.Limits.HandshakeTimeout,
		IdleTimeout:       o.Limits.HandshakeTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.With("service", "stream").Handler(), slog.LevelDebug),
	}
}

// presenceSources are the addresses the ticket relay on this host sees
// the stream relay's tunnels come from: the presence address when it is a
// specific one, and the advertised address (where a packet to the public
// address comes back from through the provider's NAT). None when the
// stream relay is off.
func (o StreamOptions) presenceSources() []netip.Prefix {
	if !o.enabled() {
		return nil
	}
	p := o.PresenceIP
	if !p.IsValid() {
		if host, _, err := net.SplitHostPort(o.TLSListen); err == nil {
			p, _ = netip.ParseAddr(host)
		}
	}
	var out []netip.Prefix
	for _, a := range []netip.Addr{p, o.AdvertiseIP} {
		if a = a.Unmap(); a.IsValid() && !a.IsUnspecified() {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
