package pathsock

import (
	"github.com/keymesh/keymesh/internal/crypto"
)

// maxKeys bounds the shared-key cache: sealed frames from unknown keys cost
// a scalar multiplication each, and must not grow memory without bound.
const maxKeys = 4096

// keyCache remembers the box key shared with each peer key, in a
// crypto.KeyCache (keys in use outlive a stream of keys used once).
type keyCache struct {
	id    *crypto.Identity
	cache *crypto.KeyCache
}

func (k *keyCache) init(id *crypto.Identity) {
	k.id = id
	k.cache = crypto.NewKeyCache(maxKeys)
}

func (k *keyCache) get(peer crypto.PeerID) (*[32]byte, error) {
	if sh, ok := k.cache.Get(&peer); ok {
		return &sh, nil
	}
	sh, err := k.id.SharedKey(peer)
	if err != nil {
		return nil, err
	}
	k.cache.Put(&peer, sh)
	return sh, nil
}
