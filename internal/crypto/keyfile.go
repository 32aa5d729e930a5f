package crypto

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

const pemType = "PRIVATE KEY"

// MarshalIdentity encodes the identity as a PKCS #8 PEM block, the format
// of its key file (openssl can read it).
func MarshalIdentity(i *Identity) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(i.priv)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), nil
}

// ParseIdentity decodes a key file's contents.
func ParseIdentity(b []byte) (*Identity, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != pemType {
		return nil, fmt.Errorf("%w: want a PEM %q block (make one with `peer keygen`)", ErrBadKeyFile, pemType)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKeyFile, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: key is %T, want Ed25519", ErrBadKeyFile, k)
	}
	return IdentityFromSeed(priv.Seed())
}

// WriteKeyFile writes a new key file with mode 0600. It refuses to replace
// an existing file.
func WriteKeyFile(path string, i *Identity) error {
	b, err := MarshalIdentity(i)
	if err != nil {
		return err
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("key file %s: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("key file %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("key file %s: %w", path, err)
	}
	return nil
}

// LoadKeyFile reads an identity from path. It refuses a file that group or
// others can read, and says how to mend it.
func LoadKeyFile(path string) (*Identity, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("key file %s is a directory: %w", path, ErrBadKeyFile)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %#o: %w; fix it with `chmod 600 %s`", path, st.Mode().Perm(), ErrKeyFileExposed, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	id, err := ParseIdentity(b)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return id, nil
}

// LoadOrCreateKeyFile loads the identity at path, or makes a new one there
// when the file does not exist. created reports which happened.
func LoadOrCreateKeyFile(path string) (id *Identity, created bool, err error) {
	id, err = LoadKeyFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return id, false, err
	}
	id, err = GenerateIdentity(nil)
	if err != nil {
		return nil, false, err
	}
	if err := WriteKeyFile(path, id); err != nil {
		return nil, false, err
	}
	return id, true, nil
}
