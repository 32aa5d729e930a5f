package turnrelay

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// LoadSecretFile reads the TURN REST API shared secret from path: the file's
// contents with surrounding white space trimmed. It refuses, in one line that
// says how to fix it, a missing file, an empty one, and one that users other
// than its owner and group may read (the secret mints credentials).
func LoadSecretFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w %s does not exist: create it with `head -c 32 /dev/urandom | base64 > %s && chmod 600 %s`",
			ErrSecretFile, path, path, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrSecretFile, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w %s is not a regular file (%s): point the flag at the file holding the secret",
			ErrSecretFile, path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return nil, fmt.Errorf("%w %s is accessible to every user (mode %04o): run `chmod 600 %s`",
			ErrSecretFile, path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrSecretFile, path, err)
	}
	secret := bytes.TrimSpace(b)
	if len(secret) == 0 {
		return nil, fmt.Errorf("%w %s is empty: write a secret into it, e.g. `head -c 32 /dev/urandom | base64 > %s`",
			ErrSecretFile, path, path)
	}
	return secret, nil
}
