package crypto

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// ReadSecretFile reads a shared secret (cookie secret, TURN secret, relay
// peering secret) from path. The file holds the secret as hex or base64 on
// one line, or raw bytes; it must give at least minLen bytes and must not be
// readable by group or others.
func ReadSecretFile(path string, minLen int) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
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
		return nil, fmt.Errorf("secret file %s gives %d bytes, want at least %d: %w; make one with `head -c 32 /dev/urandom | base64 > %s`", path, len(s), minLen, ErrBadSecret, path)
	}
	return s, nil
}

// ParseSecret decodes a secret written as hex or base64 text, falling back to
// the raw bytes.
func ParseSecret(b []byte) []byte {
	t := strings.TrimSpace(string(b))
	if d, err := hex.DecodeString(t); err == nil && len(d) > 0 {
		return d
	}
	if d, err := base64.StdEncoding.DecodeString(t); err == nil && len(d) > 0 {
		return d
	}
	return []byte(t)
}
