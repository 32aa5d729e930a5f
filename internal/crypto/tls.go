package crypto

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

// ALPN is the application protocol peers speak inside QUIC.
const ALPN = "keymesh/1"

// Certificate returns a self-signed TLS certificate carrying the identity's
// Ed25519 key. The key, not the certificate's names, is what peers check.
func (i *Identity) Certificate() (tls.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: i.id.String()},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{i.id.String()},
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, i.priv.Public(), i.priv)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: i.priv}, nil
}

// PeerFromCertificate returns the peer ID whose key a DER certificate
// carries. It does not check the signature chain: the key is the identity.
func PeerFromCertificate(der []byte) (PeerID, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return PeerID{}, fmt.Errorf("parse peer certificate: %w", err)
	}
	pub, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok {
		return PeerID{}, fmt.Errorf("peer certificate key is %T, want Ed25519: %w", c.PublicKey, ErrWrongPeer)
	}
	return PeerIDFromKey(pub)
}

// VerifyPeer returns a tls.Config.VerifyPeerCertificate function that accepts
// only a certificate carrying a key for which accept returns nil. TLS 1.3
// proves the peer holds the private key (CertificateVerify).
func VerifyPeer(accept func(PeerID) error) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return fmt.Errorf("peer sent no certificate: %w", ErrWrongPeer)
		}
		id, err := PeerFromCertificate(raw[0])
		if err != nil {
			return err
		}
		return accept(id)
	}
}

// Expect returns an accept function for VerifyPeer that admits only want.
func Expect(want PeerID) func(PeerID) error {
	return func(got PeerID) error {
		if got != want {
			return fmt.Errorf("%w: got %s, want %s", ErrWrongPeer, got.Short(), want.Short())
		}
		return nil
	}
}

// ClientTLS is the TLS configuration for dialling the peer want.
func (i *Identity) ClientTLS(want PeerID) (*tls.Config, error) {
	cert, err := i.Certificate()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{cert},
		InsecureSkipVerify:    true, // the chain is replaced by VerifyPeerCertificate's key check
		VerifyPeerCertificate: VerifyPeer(Expect(want)),
		NextProtos:            []string{ALPN},
		ServerName:            want.String(),
	}, nil
}

// ServerTLS is the TLS configuration for accepting peers; accept decides
// which peer IDs may connect (it should return a clear reason when not).
func (i *Identity) ServerTLS(accept func(PeerID) error) (*tls.Config, error) {
	cert, err := i.Certificate()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{cert},
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: VerifyPeer(accept),
		NextProtos:            []string{ALPN},
	}, nil
}
