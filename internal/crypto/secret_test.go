package crypto

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the TURN REST API convention is HMAC-SHA1
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func writeSecret(t *testing.T, text string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReadSecretFileTextIsTheKey: the trimmed text of the file is the
// secret, whatever it looks like (coturn's static-auth-secret), so a coturn
// credential minted from the file's text verifies with what we read. The
// old reader decoded base64 and hex text and so disagreed with coturn (and
// with the relay, which read raw text).
func TestReadSecretFileTextIsTheKey(t *testing.T) {
	for _, text := range []string{
		"q3pKq6WBWW6S0ZZ0jgH7t0bFVQVsC0pDLmJH5YQKqgk=", // base64 of 32 bytes
		"00112233445566778899aabbccddeeff",             // hex
		"correct horse battery staple",                 // plain text
	} {
		p := writeSecret(t, "  "+text+"\n", 0o600)
		got, err := ReadSecretFile(p, 16)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if string(got) != text {
			t.Fatalf("%q read as %q: the text must be the secret, not decoded", text, got)
		}
		// A credential minted the coturn way from the text matches ours.
		user := "1900000000:peer"
		want := hmac.New(sha1.New, []byte(text))
		want.Write([]byte(user))
		ours := hmac.New(sha1.New, got)
		ours.Write([]byte(user))
		if base64.StdEncoding.EncodeToString(ours.Sum(nil)) != base64.StdEncoding.EncodeToString(want.Sum(nil)) {
			t.Fatalf("%q: HMAC differs from coturn's", text)
		}
	}
}

func TestReadSecretFileRefuses(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"missing":     filepath.Join(dir, "nope"),
		"directory":   dir,
		"world":       writeSecret(t, "0123456789abcdef0123", 0o604),
		"group":       writeSecret(t, "0123456789abcdef0123", 0o640),
		"short":       writeSecret(t, "short\n", 0o600),
		"only spaces": writeSecret(t, " \n\t\n", 0o600),
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, p := range cases {
		if _, err := ReadSecretFile(p, 16); !errors.Is(err, ErrBadSecret) && !(name == "directory" && err != nil) {
			t.Errorf("%s: err = %v, want ErrBadSecret", name, err)
		}
	}
}
