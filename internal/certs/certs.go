// Package certs gives a server its TLS certificate for the TCP 443 fallback:
// from an ACME CA through certmagic when ACME settings are given, and
// otherwise a self-signed certificate made from the server's identity, which
// peers pin by the server's key.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/keymesh/keymesh/internal/crypto"
	"github.com/keymesh/keymesh/internal/obs"
)

// LetsEncrypt is the default ACME directory.
const LetsEncrypt = certmagic.LetsEncryptProductionCA

// Config says where the certificate comes from.
type Config struct {
	// Identity makes the self-signed certificate when Domains is empty.
	Identity *crypto.Identity
	// Domains, when set, are served with ACME certificates.
	Domains []string
	// Email is the ACME account contact (optional).
	Email string
	// CA is the ACME directory URL (default Let's Encrypt).
	CA string
	// CARootsFile is a PEM file of roots to trust for the CA's own HTTPS
	// endpoint (a private CA such as pebble).
	CARootsFile string
	// StorageDir keeps accounts and certificates (default
	// $XDG_DATA_HOME/keymesh/certs or ~/.local/share/keymesh/certs).
	StorageDir string
	// HTTPPort and TLSALPNPort are where the challenge solvers listen
	// (defaults 80 and 443; a test CA may validate elsewhere).
	HTTPPort, TLSALPNPort int
	// Timeout bounds obtaining the first certificate (default 2 minutes).
	Timeout time.Duration
	Logger  *slog.Logger
}

// ErrUnreachable is returned when the ACME CA cannot be reached.
var ErrUnreachable = errors.New("cannot reach the ACME CA")

// ACME reports whether the configuration asks for ACME certificates.
func (c Config) ACME() bool { return len(c.Domains) > 0 }

// TLSConfig returns the server TLS configuration. With ACME settings it
// obtains (or loads) the certificate before it returns, so a CA that cannot
// be reached is an error at start, in one line.
func TLSConfig(ctx context.Context, c Config) (*tls.Config, error) {
	if c.Logger == nil {
		c.Logger = obs.Discard()
	}
	if !c.ACME() {
		if c.Identity == nil {
			return nil, errors.New("certs: no identity for a self-signed certificate and no ACME domains")
		}
		cert, err := c.Identity.Certificate()
		if err != nil {
			return nil, err
		}
		return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}, nil
	}
	if c.Email == "" {
		// certmagic would otherwise prompt on the terminal for one.
		return nil, errors.New("ACME needs an account e-mail (--acme-email): the CA's contact about your certificates")
	}
	if c.CA == "" {
		c.CA = LetsEncrypt
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Minute
	}
	var roots *x509.CertPool
	if c.CARootsFile != "" {
		pem, err := os.ReadFile(c.CARootsFile)
		if err != nil {
			return nil, fmt.Errorf("ACME CA roots: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ACME CA roots %s: no PEM certificates in it", c.CARootsFile)
		}
	}
	if err := probeCA(ctx, c.CA, roots); err != nil {
		return nil, err
	}
	if c.StorageDir == "" {
		c.StorageDir = defaultStorage()
	}
	var magic *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		Logger:           zap.NewNop(),
	})
	magic = certmagic.New(cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: c.StorageDir},
		Logger:  zap.NewNop(),
	})
	issuer := certmagic.NewACMEIssuer(magic, certmagic.ACMEIssuer{
		CA:             c.CA,
		Email:          c.Email,
		Agreed:         true,
		TrustedRoots:   roots,
		AltHTTPPort:    c.HTTPPort,
		AltTLSALPNPort: c.TLSALPNPort,
		Logger:         zap.NewNop(),
	})
	magic.Issuers = []certmagic.Issuer{issuer}
	octx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	if err := magic.ManageSync(octx, c.Domains); err != nil {
		cache.Stop()
		return nil, fmt.Errorf("ACME certificate for %v from %s: %w", c.Domains, c.CA, err)
	}
	c.Logger.Info("ACME certificate ready", "domains", c.Domains, "ca", c.CA)
	tc := magic.TLSConfig()
	tc.NextProtos = append([]string{"http/1.1"}, tc.NextProtos...)
	return tc, nil
}

// probeCA fetches the ACME directory so an unreachable CA fails fast with a
// clear line instead of certmagic's long retries.
func probeCA(ctx context.Context, ca string, roots *x509.CertPool) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ca, nil)
	if err != nil {
		return fmt.Errorf("ACME CA %q: %w", ca, err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s: %v (check --acme-ca and the network)", ErrUnreachable, ca, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w at %s: directory answered %s", ErrUnreachable, ca, resp.Status)
	}
	return nil
}

func defaultStorage() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return d + "/keymesh/certs"
	}
	if h, err := os.UserHomeDir(); err == nil {
		return h + "/.local/share/keymesh/certs"
	}
	return "/var/lib/keymesh/certs"
}
