package node

import (
	"crypto/tls"

	"github.com/keymesh/keymesh/internal/crypto"
)

// tlsConfigs holds the node's TLS configurations: one server side, and the
// base of the per-peer client side (the certificate is made once).
type tlsConfigs struct {
	server *tls.Config
	base   *tls.Config
}

func newTLSConfigs(id *crypto.Identity, accept func(crypto.PeerID) error) (*tlsConfigs, error) {
	server, err := id.ServerTLS(accept)
	if err != nil {
		return nil, err
	}
	base, err := id.ClientTLS(id.ID())
	if err != nil {
		return nil, err
	}
	return &tlsConfigs{server: server, base: base}, nil
}

// client is the TLS configuration for dialling want.
func (t *tlsConfigs) client(want crypto.PeerID) *tls.Config {
	c := t.base.Clone()
	c.VerifyPeerCertificate = crypto.VerifyPeer(crypto.Expect(want))
	c.ServerName = want.String()
	return c
}
