package turnrelay

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}

	good := write("good", "  s3cret-value-of-enough-length\n", 0o600)
	b, err := LoadSecretFile(good)
	if err != nil || !bytes.Equal(b, []byte("s3cret-value-of-enough-length")) {
		t.Fatalf("good file: %q, %v", b, err)
	}
	if _, err := LoadSecretFile(write("group", "x", 0o640)); err != nil {
		t.Fatalf("group-readable file refused: %v", err)
	}

	cases := []struct {
		path, want string
	}{
		{filepath.Join(dir, "missing"), "does not exist"},
		{write("empty", " \n\t\n", 0o600), "is empty"},
		{write("world", "secret", 0o644), "chmod 600"},
		{dir, "not a regular file"},
	}
	for _, tc := range cases {
		_, err := LoadSecretFile(tc.path)
		if !errors.Is(err, ErrSecretFile) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrSecretFile mentioning %q", tc.path, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", tc.path, err)
		}
	}
}
