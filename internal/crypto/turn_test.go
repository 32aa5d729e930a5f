package crypto

import (
	"testing"
	"time"
)

func TestTURNCredentialsKnownVector(t *testing.T) {
	// Computed independently: base64(HMAC-SHA1("0123456789abcdef", "1700000000:alice")).
	u, p := TURNCredentials([]byte("0123456789abcdef"), "alice", time.Hour, time.Unix(1_700_000_000-3600, 0))
	if u != "1700000000:alice" {
		t.Fatalf("username %q, want 1700000000:alice", u)
	}
	if want := "QmpguVhgm8LJZp0MkvqhyKEkXps="; p != want {
		t.Fatalf("password %q, want %q", p, want)
	}
}
