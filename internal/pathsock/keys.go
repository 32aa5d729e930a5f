package pathsock

import (
	"sync"

	"github.com/keymesh/keymesh/internal/crypto"
)

// maxKeys bounds the shared-key cache: sealed frames from unknown keys cost
// a scalar multiplication each, and must not grow memory without bound.
const maxKeys = 4096

// keyCache remembers the box key shared with each peer key.
type keyCache struct {
	id *crypto.Identity
	mu sync.Mutex
	m  map[crypto.PeerID]*[32]byte
}

func (k *keyCache) init(id *crypto.Identity) {
	k.id = id
	k.m = map[crypto.PeerID]*[32]byte{}
}

func (k *keyCache) get(peer crypto.PeerID) (*[32]byte, error) {
	k.mu.Lock()
	sh := k.m[peer]
	k.mu.Unlock()
	if sh != nil {
		return sh, nil
	}
	sh, err := k.id.SharedKey(peer)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.m) >= maxKeys {
		for id := range k.m { // random eviction
			delete(k.m, id)
			break
		}
	}
	k.m[peer] = sh
	return sh, nil
}
