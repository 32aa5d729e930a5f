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
	"github.com/keymesh/keymesh/internal/streamrelay"
)

// StreamOptions configure the TCP/TLS stream relay (a WebSocket tunnel per
// peer whose network blocks UDP); it runs when TLSListen is set.
type StreamOptions struct {
	// TLSListen is the TCP address (443 in deployment).
	TLSListen string
	// KeyFile is the relay's identity; without ACME its certificate is
	// made from it and peers pin its key.
	KeyFile string
	// PresenceIP is the address the tunnels' UDP sockets use; default the
	// TLSListen host.
	PresenceIP netip.Addr
	// ACME settings (certs.Config); Domains empty means self-signed.
	ACME certs.Config
}

func (o StreamOptions) enabled() bool { return o.TLSListen != "" }

// startStream starts the stream relay, returning its URL (with the key pin
// when the certificate is self-signed).
func startStream(ctx context.Context, o StreamOptions, reg prometheus.Registerer, log *slog.Logger, addrs *Addrs) (string, error) {
	if !o.enabled() {
		return "", nil
	}
	host, _, err := net.SplitHostPort(o.TLSListen)
	if err != nil {
		return "", usageErr("--tls-listen %q: want host:port, e.g. :443", o.TLSListen)
	}
	presence := o.PresenceIP
	if !presence.IsValid() {
		ip, perr := netip.ParseAddr(host)
		if perr != nil || ip.IsUnspecified() {
			return "", usageErr("--tls-listen %q has no specific address: give --stream-presence-ip, the public IP tunnels' UDP sockets use", o.TLSListen)
		}
		presence = ip
	}
	cfg := o.ACME
	cfg.Logger = log
	if !cfg.ACME() {
		if o.KeyFile == "" {
			return "", usageErr("the stream relay needs --key (its identity; peers pin it) or ACME settings (--acme-domain)")
		}
		id, created, err := crypto.LoadOrCreateKeyFile(o.KeyFile)
		if err != nil {
			return "", usageErr("%v", err)
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
	srv, err := streamrelay.New(streamrelay.Config{PresenceIP: presence, Logger: log.With("service", "stream"), Registerer: reg})
	if err != nil {
		return "", usageErr("%v", err)
	}
	ln, err := sockopt.ListenTCP(ctx, o.TLSListen, false)
	if err != nil {
		return "", fmt.Errorf("stream relay: %w", err)
	}
	addrs.Stream = ln.Addr()
	hs := &http.Server{Handler: srv, TLSConfig: tlsConf, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	go func() {
		if err := hs.Serve(tls.NewListener(ln, tlsConf)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("stream relay stopped", "err", err)
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	urlHost := presence.String()
	if len(cfg.Domains) > 0 {
		urlHost = cfg.Domains[0]
	}
	url := fmt.Sprintf("wss://%s%s", net.JoinHostPort(urlHost, fmt.Sprint(port)), streamrelay.Path)
	if cfg.Identity != nil {
		url += "#" + cfg.Identity.ID().String()
	}
	return url, nil
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
