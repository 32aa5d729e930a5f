package streamclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"

	"github.com/keymesh/keymesh/internal/crypto"
)

// PinnedTLS is the client TLS configuration that accepts only a relay whose
// certificate carries the key pin. A relay without ACME settings serves a
// certificate made from its identity, and peers pin that key.
func PinnedTLS(pin crypto.PeerID) *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		InsecureSkipVerify:    true, // replaced by the key pin below
		VerifyPeerCertificate: crypto.VerifyPeer(crypto.Expect(pin)),
	}
}

// Target is a parsed stream relay address:
// wss://host:port/v1/tunnel#<relay-peer-id>. Without the fragment the relay's
// certificate is checked against the system's (or given) roots, as for an
// ACME certificate.
type Target struct {
	URL string
	Pin *crypto.PeerID
}

// ParseTarget parses a stream relay address.
func ParseTarget(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, fmt.Errorf("stream relay %q: %w (want wss://host:port%s#<relay-id>)", s, err, Path)
	}
	if u.Scheme != "wss" && u.Scheme != "ws" {
		return Target{}, fmt.Errorf("stream relay %q: scheme %q, want wss:// (want wss://host:port%s#<relay-id>)", s, u.Scheme, Path)
	}
	if u.Host == "" {
		return Target{}, fmt.Errorf("stream relay %q: no host (want wss://host:port%s#<relay-id>)", s, Path)
	}
	t := Target{}
	if u.Fragment != "" {
		id, err := crypto.ParsePeerID(u.Fragment)
		if err != nil {
			return Target{}, fmt.Errorf("stream relay %q: pin: %w", s, err)
		}
		t.Pin = &id
	}
	u.Fragment = ""
	if u.Path == "" || u.Path == "/" {
		u.Path = Path
	}
	t.URL = u.String()
	return t, nil
}

// TLS returns the client TLS configuration for the target: the pin when it
// has one, else roots (nil: the system's).
func (t Target) TLS(roots *x509.CertPool) *tls.Config {
	if t.Pin != nil {
		return PinnedTLS(*t.Pin)
	}
	host := strings.TrimPrefix(strings.TrimPrefix(t.URL, "wss://"), "ws://")
	if i := strings.IndexAny(host, ":/"); i >= 0 {
		host = host[:i]
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: host}
}
