package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ReadSecretFile reads a shared secret from path. It is the one reader of
// every secret file of every keymesh binary: the TURN REST API secret, the
// cookie secret, the relay peering secret and the join token.
//
// Convention (coturn's static-auth-secret): the file's text, with
// surrounding white space (a trailing newline) trimmed, IS the secret; it is
// used as is, never decoded from hex or base64. So a file made with `head -c
// 32 /dev/urandom | base64` holds a 44-character secret, and a WebRTC
// backend that mints coturn credentials with the same text computes the
// same HMACs as the rendezvous and the relay.
//
// It refuses, in one line that says how to fix it, a missing file, one that
// is not a regular file, one that users other than its owner may read (the
// secret mints credentials), and one whose secret is shorter than minLen
// bytes.
func ReadSecretFile(path string, minLen int) ([]byte, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("secret file %s does not exist: %w; create it with `head -c 32 /dev/urandom | base64 > %s && chmod 600 %s`",
			path, ErrBadSecret, path, path)
	}
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("secret file %s is not a regular file (%s): %w; point the flag at the file holding the secret",
			path, st.Mode().Type(), ErrBadSecret)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secret file %s has mode %#o: %w: readable by others; fix it with `chmod 600 %s`", path, st.Mode().Perm(), ErrBadSecret, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	s := ParseSecret(b)
	if len(s) < minLen {
		return nil, fmt.Errorf("secret file %s holds %d bytes of text, want at least %d: %w; make one with `head -c 32 /dev/urandom | base64 > %s`", path, len(s), minLen, ErrBadSecret, path)
	}
	return s, nil
}

// ParseSecret returns the secret a secret file's contents b hold: the text
// with surrounding white space trimmed (see ReadSecretFile).
func ParseSecret(b []byte) []byte {
	return bytes.Clone(bytes.TrimSpace(b))
}
